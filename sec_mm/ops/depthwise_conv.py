"""Depthwise convolution whose 5x5 weight gradient is computed from 3x3 ones on CPU.

oneDNN computes the weight gradient of a 5x5 depthwise convolution 10-17x slower than that of
a 3x3 one (about 9 ms against 0.8 ms at SECViT-T's stage 1, batch 16, on a 2-core CPU), and
the LCE conv of every SEC attention layer is a 5x5 depthwise convolution. That gradient is the
25 correlations ``S(a, b) = sum_{n, h, w} dy[n, h, w] * x[n, h + a, w + b]`` for
``|a|, |b| <= 2`` (per channel, ``x`` zero outside the image). The 3x3 weight gradient of a
convolution without padding over a window of the zero-padded input gives nine of them, a 3x3
block; four windows, one per corner of the 5x5 kernel, give all 25 at about half the cost.

Everything else (the forward pass, the input gradient, other kernel sizes, GPUs, other dtypes,
autocast, tracing and compiling) is the stock convolution.

Pure PyTorch on purpose: nothing here knows about mmengine, mmdet, mmseg or mmpretrain.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn.grad import conv2d_weight

from .compat import is_autocast_enabled, is_compiling

__all__ = ['depthwise_conv2d']


def _weight_grad_5x5(grad_out: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    """Weight gradient of a 5x5 depthwise convolution with padding 2, from four 3x3 ones;
    laid out like ``weight``, as autograd and DDP expect of a parameter's gradient."""
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
    :func:`_weight_grad_5x5`."""

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
        grad_weight = _weight_grad_5x5(grad_out, x, weight) if ctx.needs_input_grad[1] else None
        return grad_x, grad_weight, grad_bias


def _use_3x3_weight_grads(x: Tensor, weight: Tensor, padding: int) -> bool:
    return (x.device.type == 'cpu' and x.dtype == weight.dtype == torch.float32
            and x.dim() == 4 and weight.shape == (x.shape[1], 1, 5, 5) and padding == 2
            and x.is_contiguous(memory_format=torch.channels_last)
            and torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
            and not is_autocast_enabled('cpu')
            # Tracers and compilers see the standard op.
            and not torch.jit.is_tracing() and not is_compiling())


def depthwise_conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                     padding: int = 0) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=padding, groups=C)``: a depthwise convolution.

    Same values and gradients as the stock call. On CPU, for a 5x5 kernel with padding 2 on a
    float32 channels-last input, the weight gradient comes from four 3x3 weight gradients
    (see the module docstring), about twice as fast there.

    Args:
        x (Tensor): ``(B, C, H, W)``.
        weight (Tensor): ``(C, 1, k, k)``.
        bias (Tensor, optional): ``(C, )``.
        padding (int): Zero padding on every side. Defaults to 0.

    Returns:
        Tensor: ``(B, C, H + 2 * padding - k + 1, W + 2 * padding - k + 1)``.
    """
    if weight.dim() != 4 or weight.shape[1] != 1 or weight.shape[0] != x.shape[1]:
        raise ValueError(
            'depthwise_conv2d needs a (C, 1, k, k) weight for a (B, C, H, W) input; got '
            f'weight {tuple(weight.shape)} for input {tuple(x.shape)}.')
    if _use_3x3_weight_grads(x, weight, padding):
        return _DepthwiseConv5x5.apply(x, weight, bias)
    return F.conv2d(x, weight, bias, padding=padding, groups=x.shape[1])
