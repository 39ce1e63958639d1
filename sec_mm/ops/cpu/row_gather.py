"""Token gathers and permutations as ``index_select`` of whole rows of storage.

``x[b, h, index[b, h, i]]`` for ``x`` of shape ``(B, heads, L, d)``: every ``d``-vector is one
row of memory, so the gather is one ``index_select`` of rows straight from ``x``'s storage,
whatever its strides (e.g. a head-sliced view of a token-major ``(B, L, 3, heads, d)`` qkv
tensor), instead of an element-wise ``torch.gather`` of a contiguous copy. A permutation's
gradient is the inverse permutation, another row gather, instead of the zero-fill and
scatter-add that autograd runs for ``gather``. The result can be written token-major
(``(B, L, heads, d)`` memory), the layout in which merging the heads is free.

Measured against ``gather`` / ``scatter_`` (benchmarks/results.md, "Dispatch kernels"; torch
2.14, 2 threads, medians of 21 interleaved runs): the three permutations and the restore of
one SEC attention call, forward and backward, on head-sliced views of a token-major qkv
tensor, at SECViT-T's stages for batch 8: ``(8, 2, 3136, 32)`` 23.0 vs. 58.6 ms (2.6x),
``(8, 4, 784, 32)`` 6.2 vs. 17.8 ms (2.9x), ``(8, 8, 196, 32)`` 2.5 vs. 7.2 ms (2.9x).
"""

import torch
from torch import Tensor

__all__ = ['supports', 'storage_row_numbers', 'take_rows', 'gather_rows', 'permute_rows']

#: Memory orders of a ``(B, heads, L, d)`` result: contiguous, or a transposed view of a
#: contiguous ``(B, L, heads, d)`` tensor.
LAYOUTS = ('bhld', 'blhd')


def supports(x: Tensor) -> bool:
    """4-D CPU tensors."""
    return x.device.type == 'cpu' and x.dim() == 4


def storage_row_numbers(x: Tensor, index: Tensor) -> Tensor:
    """Where ``x[b, h, index[b, h, i]]`` lies in ``x``'s storage, in rows of ``d`` elements
    from its storage offset.

    ``x`` must have a unit last stride and the other strides multiples of ``d``.
    """
    batch, heads, _, dims = x.shape
    stride_b, stride_h, stride_l = (stride // dims for stride in x.stride()[:3])
    first_row = (torch.arange(batch, device=x.device) * stride_b).view(-1, 1, 1) + \
        (torch.arange(heads, device=x.device) * stride_h).view(1, -1, 1)
    return index * stride_l + first_row


def take_rows(x: Tensor, index: Tensor, layout: str = 'bhld') -> Tensor:
    """``x[b, h, index[b, h, i]]`` without autograd.

    Args:
        x (Tensor): ``(B, heads, L, d)``, any strides.
        index (Tensor): ``(B, heads, M)`` int64.
        layout (str): Memory order of the result, ``'bhld'`` (contiguous) or ``'blhd'`` (a
            ``(B, heads, M, d)`` view of contiguous ``(B, M, heads, d)`` memory).

    Returns:
        Tensor: ``(B, heads, M, d)``.
    """
    batch, heads, _, dims = x.shape
    length = index.shape[-1]
    if index.numel() == 0:
        # Nothing to read (e.g. batch size 0), and the storage view below needs a row.
        if layout == 'blhd':
            return x.new_empty(batch, length, heads, dims).transpose(1, 2)
        return x.new_empty(batch, heads, length, dims)
    if x.stride(-1) != 1 or any(stride % dims for stride in x.stride()[:3]):
        x = x.contiguous()
    # Every d-vector of x as one row of a (rows, d) view of its storage.
    last_row = sum((size - 1) * (stride // dims)
                   for size, stride in zip(x.shape[:3], x.stride()[:3]))
    rows = x.as_strided((last_row + 1, dims), (dims, 1))
    source = storage_row_numbers(x, index)
    if layout == 'blhd':
        return rows.index_select(0, source.transpose(1, 2).reshape(-1)).view(
            batch, length, heads, dims).transpose(1, 2)
    return rows.index_select(0, source.reshape(-1)).view(batch, heads, length, dims)


class _PermuteRows(torch.autograd.Function):
    """Differentiable :func:`take_rows` for an index that permutes the tokens; the backward
    pass gathers the gradient rows by the inverse permutation."""

    @staticmethod
    def forward(ctx, x: Tensor, order: Tensor, inverse: Tensor, layout: str) -> Tensor:
        ctx.save_for_backward(order, inverse)
        return take_rows(x, order, layout)

    @staticmethod
    def backward(ctx, grad: Tensor):
        order, inverse = ctx.saved_tensors
        return _PermuteRows.apply(grad, inverse, order, 'bhld'), None, None, None


class _GatherRows(torch.autograd.Function):
    """Differentiable :func:`take_rows` for any index (tokens may repeat or be left out);
    the backward pass adds the gradient rows back with one ``index_add_``."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        ctx.x_shape = x.shape
        return take_rows(x, index)

    @staticmethod
    def backward(ctx, grad: Tensor):
        index, = ctx.saved_tensors
        grad_x = grad.new_zeros(ctx.x_shape)
        dims = grad_x.shape[-1]
        grad_x.view(-1, dims).index_add_(0, storage_row_numbers(grad_x, index).reshape(-1),
                                         grad.reshape(-1, dims))
        return grad_x, None


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, h, index[b, h, i]]``, differentiable; contiguous ``(B, heads, M, d)``."""
    return _GatherRows.apply(x, index)


def permute_rows(x: Tensor, order: Tensor, inverse: Tensor, layout: str = 'bhld') -> Tensor:
    """``x[b, h, order[b, h, i]]`` for a permutation ``order`` with inverse ``inverse``
    (both ``(B, heads, L)``), differentiable; ``layout`` as in :func:`take_rows`."""
    return _PermuteRows.apply(x, order, inverse, layout)
