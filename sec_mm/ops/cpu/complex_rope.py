"""RoPE of a qkv projection as one complex multiplication per tensor.

``apply_rope(x) = x * cos + rotate_pairs(x) * sin`` reads each channel pair ``(x0, x1)`` of a
head as the complex number ``x0 + i x1`` rotated by the pair's angle; the rotation is one
complex multiplication, written straight into the head-major ``(B, heads, L, d)`` layout that
attention reads, instead of five elementwise passes and a transpose copy. The backward pass
rotates the gradients back (by the opposite angle) into one gradient of the projection.

Measured against the real-valued formula (benchmarks/results.md, "Dispatch kernels"; torch
2.14, 2 threads, medians of 21 interleaved runs), forward and backward from a channels-last
qkv projection at SECViT-T's stages for batch 8: ``(8, 3136, 3, 2, 32)`` 9.7 vs. 28.4 ms
(2.9x), ``(8, 784, 3, 4, 32)`` 3.9 vs. 8.2 ms (2.1x).
"""
from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ['supports', 'split_qkv_with_rope']


def supports(qkv: Tensor, sin: Tensor, cos: Tensor) -> bool:
    """CPU float32/float64 ``qkv`` of the dtype that RoPE gives (the tables' dtype or lower)."""
    dtype = torch.promote_types(qkv.dtype, cos.dtype)
    return (qkv.device.type == 'cpu' and qkv.dim() == 5 and qkv.dtype == dtype
            and dtype in (torch.float32, torch.float64))


def _rotate(x: Tensor, rotation: Tensor, out: Tensor) -> None:
    """``out = x * rotation`` with channel pairs of ``x``/``out`` read as complex numbers.

    ``x``: ``(B, L, heads, d)``; ``rotation``: complex ``(L, d / 2)``; ``out``: a
    ``(B, L, heads, d)`` view of any layout (written in place).
    """
    if x.stride(-1) != 1 or any(stride % 2 for stride in x.stride()[:-1]) or \
            x.storage_offset() % 2:
        x = x.contiguous()
    torch.mul(torch.view_as_complex(x.unflatten(-1, (-1, 2))), rotation[:, None],
              out=torch.view_as_complex(out.unflatten(-1, (-1, 2))))


class _SplitQKVWithRope(torch.autograd.Function):
    """q, k, v of a token-major qkv projection, q and k rotated into head-major buffers; the
    gradients of all three go into one gradient of the projection."""

    @staticmethod
    def forward(ctx, qkv: Tensor, rotation: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        batch, length, _, heads, dims = qkv.shape
        q = qkv.new_empty((batch, heads, length, dims))
        k = qkv.new_empty((batch, heads, length, dims))
        _rotate(qkv[:, :, 0], rotation, q.transpose(1, 2))
        _rotate(qkv[:, :, 1], rotation, k.transpose(1, 2))
        ctx.save_for_backward(rotation)
        ctx.qkv_shape = qkv.shape
        # A dense copy of v: the LCE conv would copy the strided view anyway, and gathering
        # rows from dense memory is faster.
        return q, k, qkv[:, :, 2].contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_q: Optional[Tensor], grad_k: Optional[Tensor],
                 grad_v: Optional[Tensor]) -> Tuple[Tensor, None]:
        rotation, = ctx.saved_tensors
        grad = rotation.real.new_empty(ctx.qkv_shape)
        # A rotation's adjoint is the rotation by the opposite angle.
        inverse = rotation.conj().resolve_conj()
        for index, part in enumerate((grad_q, grad_k)):
            if part is None:
                grad[:, :, index].zero_()
            else:
                _rotate(part.transpose(1, 2), inverse, grad[:, :, index])
        if grad_v is None:
            grad[:, :, 2].zero_()
        else:
            grad[:, :, 2].copy_(grad_v)
        return grad, None


def split_qkv_with_rope(qkv: Tensor, sin: Tensor,
                        cos: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """:func:`sec_mm.ops.dispatch.split_qkv_with_rope` for tables whose channel pairs share
    their angle (those of :class:`~sec_mm.models.layers.RotaryEmbedding2d`).

    Returns:
        tuple[Tensor, Tensor, Tensor]: Contiguous ``q``, ``k`` ``(B, heads, L, d)`` and a
        contiguous ``v`` ``(B, L, heads, d)``.
    """
    rotation = torch.complex(cos[:, 0::2].to(qkv.dtype), sin[:, 0::2].to(qkv.dtype))
    return _SplitQKVWithRope.apply(qkv, rotation)
