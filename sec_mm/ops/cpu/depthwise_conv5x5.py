"""5x5 depthwise convolution whose weight gradient is computed from four 3x3 ones.

oneDNN computes the weight gradient of a 5x5 depthwise convolution many times slower than that
of a 3x3 one, and the LCE conv of every SEC attention layer is a 5x5 depthwise convolution.
That gradient is the 25 correlations ``S(a, b) = sum_{n, h, w} dy[n, h, w] * x[n, h + a, w + b]``
for ``|a|, |b| <= 2`` (per channel, ``x`` zero outside the image). The 3x3 weight gradient of
a convolution without padding over a window of the zero-padded input gives nine of them, a 3x3
block; four windows, one per corner of the 5x5 kernel, give all 25. The forward pass and the
input and bias gradients are the stock convolution's.

Measured (benchmarks/results.md, "Dispatch kernels"): forward and backward of the LCE conv at
SECViT-T's stages 1-3, batch 8, channels-last float32, 2 threads.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn.grad import conv2d_weight

from ..compat import is_autocast_enabled

__all__ = ['supports', 'depthwise_conv5x5']


def supports(x: Tensor, weight: Tensor, padding: int) -> bool:
    """A float32 channels-last CPU input to a 5x5 kernel with padding 2, whose weight or input
    gradient will be needed, outside autocast (which casts the inputs of ``F.conv2d``)."""
    return (x.device.type == 'cpu' and x.dtype == weight.dtype == torch.float32
            and x.dim() == 4 and weight.shape == (x.shape[1], 1, 5, 5) and padding == 2
            and x.is_contiguous(memory_format=torch.channels_last)
            and torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
            and not is_autocast_enabled('cpu'))


def _weight_grad(grad_out: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    """Weight gradient from four 3x3 ones; laid out like ``weight``, as autograd and DDP
    expect of a parameter's gradient."""
    channels, (height, width) = x.shape[1], x.shape[-2:]
    # One padded copy and four window copies: padding each window separately is slower (it
    # zero-fills four buffers instead of one).
    padded = F.pad(x, (2, 2, 2, 2))
    grad_weight = torch.empty_like(weight)
    # The window starting at (top, left) of the padded input gives kernel rows top..top+2 and
    # columns left..left+2; the shared middle row and column are computed twice.
    for top in (0, 2):
        for left in (0, 2):
            window = padded[:, :, top:top + height + 2, left:left + width + 2]
            grad_weight[:, :, top:top + 3, left:left + 3] = conv2d_weight(
                window.contiguous(memory_format=torch.channels_last), (channels, 1, 3, 3),
                grad_out, groups=channels)
    return grad_weight


class _DepthwiseConv5x5(torch.autograd.Function):
    """Stock 5x5 depthwise convolution (padding 2) with the weight gradient of
    :func:`_weight_grad`."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, padding=2, groups=x.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> Tuple[Optional[Tensor], ...]:
        x, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous(memory_format=torch.channels_last)
        # The stock input and bias gradients, in one call (``torch.nn.grad.conv2d_input``
        # would lose the channels-last layout, which it takes from a placeholder input).
        # The bias size is given: an empty batch (B = 0) needs it to shape the zero gradient.
        grad_x, _, grad_bias = torch.ops.aten.convolution_backward(
            grad_out, x, weight, [x.shape[1]] if ctx.has_bias else None, (1, 1), (2, 2),
            (1, 1), False, (0, 0), x.shape[1],
            (ctx.needs_input_grad[0], False, ctx.has_bias and ctx.needs_input_grad[2]))
        grad_weight = _weight_grad(grad_out, x, weight) if ctx.needs_input_grad[1] else None
        return grad_x, grad_weight, grad_bias


def depthwise_conv5x5(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=2, groups=C)`` for a ``(C, 1, 5, 5)`` weight.

    Args:
        x (Tensor): ``(B, C, H, W)``, channels-last float32.
        weight (Tensor): ``(C, 1, 5, 5)``.
        bias (Tensor, optional): ``(C, )``.

    Returns:
        Tensor: ``(B, C, H, W)``.
    """
    return _DepthwiseConv5x5.apply(x, weight, bias)
