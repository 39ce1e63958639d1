"""The one place where sec_mm picks a device-specific kernel for a primitive.

Every function here has the semantics of a plain PyTorch op, given in its docstring, and runs
that op unless a kernel of :mod:`sec_mm.ops.cpu` applies: on the CPU, for the dtypes and sizes
the kernel was measured to pay for (each kernel's docstring gives the measurement), and never
while ``torch.jit.trace``, ``torch.compile`` or an exporter is looking, which see the plain op.
GPUs run the plain fused ops (``scaled_dot_product_attention`` on 4-D tensors).
Kernels return the plain op's values up to float rounding, and the same gradients.

:func:`plain_ops` turns kernels off, to test them against the plain path or to measure them::

    with dispatch.plain_ops():                   # every primitive
        ...
    with dispatch.plain_ops('attention'):        # only this one
        ...

Pure PyTorch on purpose: nothing here knows about mmengine, mmdet, mmseg or mmpretrain.
"""
import contextlib
import threading
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .compat import is_compiling, is_exporting
from .cpu import complex_rope, inplace_add, row_argsort, row_gather, short_attention
from .rope import apply_rope

__all__ = [
    'PRIMITIVES', 'plain_ops', 'uses_kernel', 'stable_argsort', 'inverse_permutation',
    'gather_rows', 'permute_rows', 'scatter_rows', 'attention', 'split_qkv_with_rope',
    'add_into_fresh'
]

#: Names of the primitives that have a CPU kernel, for :func:`plain_ops`.
PRIMITIVES = ('stable_argsort', 'rows', 'attention', 'split_qkv_with_rope', 'add_into_fresh')

_plain = threading.local()


@contextlib.contextmanager
def plain_ops(*names: str) -> Iterator[None]:
    """Run the plain PyTorch op of the named primitives (all of :data:`PRIMITIVES` when none
    is named) inside the ``with`` block, in this thread."""
    unknown = set(names) - set(PRIMITIVES)
    if unknown:
        raise ValueError(f'plain_ops got unknown primitive names {sorted(unknown)}; the '
                         f'primitives with kernels are {list(PRIMITIVES)}.')
    before = getattr(_plain, 'names', frozenset())
    _plain.names = before | frozenset(names or PRIMITIVES)
    try:
        yield
    finally:
        _plain.names = before


def uses_kernel(name: str) -> bool:
    """Whether kernels may run for the primitive ``name`` here: not turned off by
    :func:`plain_ops`, and no tracer, compiler or exporter is looking."""
    return (name not in getattr(_plain, 'names', frozenset()) and not torch.jit.is_tracing()
            and not is_compiling() and not is_exporting())


def stable_argsort(values: Tensor) -> Tensor:
    """``torch.sort(values, dim=-1, stable=True).indices``: ``(..., L)`` -> int64 ``(..., L)``.

    Exporters get ``torch.sort(values, dim=-1)``: ONNX has no stable sort, and a plain sort
    exports to TopK, which breaks ties by the lower index (ONNX operator spec), as a stable
    sort does.
    """
    if is_exporting():
        return torch.sort(values, dim=-1).indices
    if uses_kernel('stable_argsort') and row_argsort.supports(values):
        return row_argsort.stable_argsort(values)
    return torch.sort(values, dim=-1, stable=True).indices


def inverse_permutation(order: Tensor) -> Tensor:
    """``inverse[..., order[..., i]] = i`` along the last axis (a scatter, not a second sort)."""
    positions = torch.arange(order.shape[-1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


def _row_index(index: Tensor, dims: int) -> Tensor:
    return index.unsqueeze(-1).expand(*index.shape, dims)


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x.gather(2, index[..., None].expand(-1, -1, -1, d))``: ``x[b, h, index[b, h, i]]``.

    Args:
        x (Tensor): ``(B, heads, L, d)``, any strides.
        index (Tensor): ``(B, heads, M)`` int64; entries may repeat or be left out.

    Returns:
        Tensor: Contiguous ``(B, heads, M, d)``.
    """
    if uses_kernel('rows') and row_gather.supports(x):
        return row_gather.gather_rows(x, index)
    return x.gather(2, _row_index(index, x.shape[-1]))


class _GatherPermutation(torch.autograd.Function):
    """``x.gather(2, order)`` whose gradient is the gather by the inverse permutation.

    A permutation's gradient only moves rows back; autograd's own backward of ``gather``
    zero-fills a buffer and scatter-adds into it (atomic adds on GPUs).
    """

    @staticmethod
    def forward(ctx, x: Tensor, order: Tensor, inverse: Tensor) -> Tensor:
        ctx.save_for_backward(inverse)
        return x.gather(2, _row_index(order, x.shape[-1]))

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Tensor, None, None]:
        inverse, = ctx.saved_tensors
        return grad.gather(2, _row_index(inverse, grad.shape[-1])), None, None


def permute_rows(x: Tensor, order: Tensor, inverse: Optional[Tensor] = None) -> Tensor:
    """:func:`gather_rows` for an ``order`` that permutes the ``L`` tokens of every row.

    Args:
        x (Tensor): ``(B, heads, L, d)``.
        order (Tensor): ``(B, heads, L)``, a permutation of ``0..L-1`` in every row.
        inverse (Tensor, optional): Its :func:`inverse_permutation`, when already computed.

    Returns:
        Tensor: Contiguous ``(B, heads, L, d)``.
    """
    if is_exporting() or torch.jit.is_tracing():
        # Tracers record a custom autograd Function as an opaque node.
        return x.gather(2, _row_index(order, x.shape[-1]))
    inverse = inverse_permutation(order) if inverse is None else inverse
    if uses_kernel('rows') and row_gather.supports(x):
        return row_gather.permute_rows(x, order, inverse)
    return _GatherPermutation.apply(x, order, inverse)


def scatter_rows(x: Tensor, order: Tensor, inverse: Optional[Tensor] = None) -> Tensor:
    """``out[b, h, order[b, h, i]] = x[b, h, i]``: the inverse of :func:`permute_rows`.

    Args:
        x (Tensor): ``(B, heads, L, d)``, rows in the order ``order``.
        order (Tensor): ``(B, heads, L)``, a permutation of ``0..L-1`` in every row.
        inverse (Tensor, optional): Its :func:`inverse_permutation`, when already computed.

    Returns:
        Tensor: ``(B, heads, L, d)`` laid out token-major in memory (a transposed view of a
        contiguous ``(B, L, heads, d)``), so that merging the heads with
        ``out.transpose(1, 2).reshape(B, L, heads * d)`` is free.
    """
    batch, heads, length, dims = x.shape
    if uses_kernel('rows') and row_gather.supports(x):
        inverse = inverse_permutation(order) if inverse is None else inverse
        return row_gather.permute_rows(x, inverse, order, layout='blhd')
    if is_exporting():
        # No in-place writes into exported graphs.
        inverse = inverse_permutation(order) if inverse is None else inverse
        return x.gather(2, _row_index(inverse, dims))
    out = x.new_empty(batch, length, heads, dims).transpose(1, 2)
    return out.scatter_(2, _row_index(order, dims), x)


def attention(q: Tensor, k: Tensor, v: Tensor, scale: Optional[float] = None) -> Tensor:
    """``F.scaled_dot_product_attention(q, k, v, scale=scale)``: ``softmax(q k^T * scale) v``.

    Args:
        q (Tensor): ``(..., L_q, d)``.
        k (Tensor): ``(..., L_k, d)``, the same leading dims.
        v (Tensor): ``(..., L_k, d_v)``.
        scale (float, optional): Logit scale; defaults to ``d ** -0.5``.

    Returns:
        Tensor: ``(..., L_q, d_v)``.
    """
    if scale is None:
        scale = q.shape[-1]**-0.5
    if (q.numel() == 0 or k.numel() == 0) and q.shape[:-2] == k.shape[:-2] == v.shape[:-2]:
        # Nothing to compute (e.g. batch size 0), and the backward of the CPU flash kernel
        # aborts the process on empty inputs.
        return short_attention.attention(q, k, v, scale)
    if uses_kernel('attention') and short_attention.supports(q, k, v):
        return short_attention.attention(q, k, v, scale)
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


def split_qkv_with_rope(qkv: Tensor, sin: Tensor,
                        cos: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Queries and keys rotated by RoPE, and values, of a token-major qkv projection:
    ``apply_rope(qkv[:, :, i].transpose(1, 2), sin, cos)`` for ``i`` = 0, 1 and
    ``qkv[:, :, 2]``.

    The CPU kernel assumes that both channels of a rotated pair share their angle, as in the
    tables of :class:`~sec_mm.models.layers.RotaryEmbedding2d`.

    Args:
        qkv (Tensor): ``(B, L, 3, heads, d)``, e.g. a view of a channels-last qkv projection.
        sin (Tensor): ``(L, d)``.
        cos (Tensor): ``(L, d)``.

    Returns:
        tuple[Tensor, Tensor, Tensor]: ``q`` and ``k``, ``(B, heads, L, d)`` in the dtype that
        ``q * cos`` has (float32 for half-precision ``qkv`` and float32 tables, as in the
        release; contiguous from the kernel), and ``v``, ``qkv[:, :, 2]`` as
        ``(B, L, heads, d)`` (a contiguous copy from the kernel, a view otherwise).
    """
    if uses_kernel('split_qkv_with_rope') and complex_rope.supports(qkv, sin, cos):
        return complex_rope.split_qkv_with_rope(qkv, sin, cos)
    dtype = torch.promote_types(qkv.dtype, cos.dtype)
    q, k, v = qkv.unbind(2)
    return (*(apply_rope(t.transpose(1, 2).to(dtype), sin, cos) for t in (q, k)), v)


def add_into_fresh(fresh: Tensor, other: Tensor) -> Tensor:
    """``fresh + other``, possibly written into ``fresh``.

    Args:
        fresh (Tensor): A tensor that nothing else refers to and whose producer's backward
            does not need it, such as a conv's output.
        other (Tensor): The tensor to add.
    """
    if uses_kernel('add_into_fresh') and inplace_add.supports(fresh, other):
        return inplace_add.add_into_fresh(fresh, other)
    return fresh + other
