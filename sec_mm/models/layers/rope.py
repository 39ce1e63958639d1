"""2-D rotary position embedding (RoPE) as used by the SECViT release."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor
from torch.autograd.function import once_differentiable

from sec_mm.ops.compat import is_compiling, is_exporting

__all__ = ['rotate_pairs', 'apply_rope', 'split_qkv_with_rope', 'RotaryEmbedding2d']


def rotate_pairs(x: Tensor) -> Tensor:
    """Map each consecutive pair ``(x0, x1)`` of the last axis to ``(-x1, x0)``."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def apply_rope(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """Rotate ``x`` of shape ``(..., L, d)`` by the angles behind ``sin``/``cos`` ``(L, d)``."""
    return x * cos + rotate_pairs(x) * sin


def _rotate_complex(x: Tensor, rotation: Tensor, out: Tensor) -> None:
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
    """q, k, v of a token-major qkv projection, q and k rotated into head-major buffers.

    The backward pass rotates the gradients of q and k back and writes all three into one
    gradient of the projection, so no gradient is stacked or concatenated afterwards.
    """

    @staticmethod
    def forward(ctx, qkv: Tensor, rotation: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        batch, length, _, heads, dims = qkv.shape
        q = qkv.new_empty((batch, heads, length, dims))
        k = qkv.new_empty((batch, heads, length, dims))
        _rotate_complex(qkv[:, :, 0], rotation, q.transpose(1, 2))
        _rotate_complex(qkv[:, :, 1], rotation, k.transpose(1, 2))
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
                _rotate_complex(part.transpose(1, 2), inverse, grad[:, :, index])
        if grad_v is None:
            grad[:, :, 2].zero_()
        else:
            grad[:, :, 2].copy_(grad_v)
        return grad, None


def split_qkv_with_rope(qkv: Tensor, sin: Tensor,
                        cos: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Queries and keys rotated by RoPE, and values, of a token-major qkv projection.

    ``q`` and ``k`` equal ``apply_rope(qkv[:, :, i].transpose(1, 2), sin, cos)`` for tables
    made by :class:`RotaryEmbedding2d` (both channels of a rotated pair share their angle),
    but are computed as one complex multiplication per tensor that writes straight into the
    head-major layout attention reads (several times faster on CPU than
    ``x * cos + rotate_pairs(x) * sin``), and their gradients go straight back into one
    gradient of ``qkv``.

    Args:
        qkv (Tensor): ``(B, L, 3, heads, d)``, e.g. a view of a channels-last qkv projection.
        sin (Tensor): ``(L, d)`` from :class:`RotaryEmbedding2d`.
        cos (Tensor): ``(L, d)``.

    Returns:
        tuple[Tensor, Tensor, Tensor]: ``q`` and ``k``, contiguous ``(B, heads, L, d)`` in the
        dtype that ``q * cos`` has (float32 for half-precision ``qkv`` and float32 tables, as
        in the release), and ``v``, ``qkv[:, :, 2]`` as ``(B, L, heads, d)`` (contiguous on the
        fast path, a view otherwise).
    """
    dtype = torch.promote_types(qkv.dtype, cos.dtype)
    if is_compiling() or is_exporting() or qkv.dtype != dtype or \
            dtype not in (torch.float32, torch.float64):
        # Compilers fuse the real-valued formula well; exporters have no complex numbers;
        # complex views need float32/64; the gradient buffer needs one dtype for q, k and v.
        q, k, v = qkv.unbind(2)
        return (*(apply_rope(t.transpose(1, 2).to(dtype), sin, cos) for t in (q, k)), v)
    rotation = torch.complex(cos[:, 0::2].to(dtype), sin[:, 0::2].to(dtype))
    return _SplitQKVWithRope.apply(qkv, rotation)


class RotaryEmbedding2d(nn.Module):
    """Sines and cosines of a 2-D rotary embedding for an ``h x w`` token grid.

    The first half of the head dimension rotates with the row index, the second half with the
    column index; each consecutive pair of channels shares one frequency.

    Args:
        head_dims (int): Channels per head ``d``; must be a multiple of 4.
        base (float): Frequency base. Defaults to 10000.
    """

    def __init__(self, head_dims: int, base: float = 10000.) -> None:
        super().__init__()
        if head_dims % 4 != 0:
            raise ValueError(
                f'2-D RoPE needs a head dimension divisible by 4, got {head_dims}; choose '
                '`embed_dims` and `num_heads` so that embed_dims // num_heads % 4 == 0, or '
                'turn RoPE off (use_rope=False).')
        self.head_dims = head_dims
        angle = 1. / base**torch.linspace(0, 1, head_dims // 4)
        # [a0, a0, a1, a1, ...]: both members of a rotated pair share a frequency. Derived
        # from head_dims alone, so it is not saved in checkpoints.
        self.register_buffer(
            'angle', angle.repeat_interleave(2), persistent=False)

    def forward(self, height: int, width: int) -> Tuple[Tensor, Tensor]:
        """Return ``(sin, cos)``, each ``(height * width, head_dims)`` in row-major order."""
        angle = self.angle.float()
        rows = torch.arange(height, device=angle.device, dtype=angle.dtype)
        cols = torch.arange(width, device=angle.device, dtype=angle.dtype)
        row_angle = (rows[:, None] * angle).unsqueeze(1).expand(height, width, -1)
        col_angle = (cols[:, None] * angle).unsqueeze(0).expand(height, width, -1)
        grid = torch.cat([row_angle, col_angle], dim=-1).reshape(height * width, -1)
        return grid.sin(), grid.cos()
