"""Semantic Equitable Clustering (SEC) attention as a functional op.

SEC groups tokens by meaning instead of by position: every key is compared (cosine
similarity) with the mean key of its (batch item, head), tokens are sorted by that similarity,
the sorted sequence is cut into equal clusters and attention runs inside each cluster. The
output rows go back to their tokens' original positions.

Pure PyTorch on purpose: nothing here knows about mmengine, mmdet, mmseg or mmpretrain.
"""
import math
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention import dot_product_attention
from .compat import is_compiling, is_exporting
from .sec_attention_export import gather_rows, sec_attention_exportable

__all__ = [
    'sec_attention', 'sec_order', 'sec_cluster_sizes', 'resolve_num_clusters',
    'gather_tokens', 'permute_tokens', 'restore_tokens', 'inverse_permutation'
]

# Smallest flat int64 tensor that PyTorch's CPU sort sorts by radix sort (at::internal's
# GRAIN_SIZE).
_RADIX_MIN_KEYS = 32768


def resolve_num_clusters(num_tokens: int,
                         num_clusters: Optional[int] = None,
                         cluster_size: Optional[int] = None) -> int:
    """Number of clusters for ``num_tokens`` tokens in either cluster mode.

    Args:
        num_tokens (int): Tokens per (batch item, head), ``L``.
        num_clusters (int, optional): A fixed count of clusters (the papers' mode). Values
            ``<= 1`` mean one cluster, i.e. global attention. More clusters than tokens are
            reduced to one token per cluster.
        cluster_size (int, optional): Tokens per cluster instead; the count is then
            ``ceil(L / cluster_size)`` so the cost grows linearly with ``L``.

    Exactly one of ``num_clusters`` and ``cluster_size`` must be given.

    Returns:
        int: The number of clusters, between 1 and ``num_tokens``.
    """
    if (num_clusters is None) == (cluster_size is None):
        raise ValueError(
            'SEC attention needs exactly one of `num_clusters` (a fixed count of clusters) '
            'and `cluster_size` (a fixed count of tokens per cluster); got '
            f'num_clusters={num_clusters!r}, cluster_size={cluster_size!r}.')
    if cluster_size is not None:
        if int(cluster_size) != cluster_size or cluster_size < 1:
            raise ValueError(f'`cluster_size` must be a positive integer, got {cluster_size!r}.')
        count = math.ceil(num_tokens / int(cluster_size))
    else:
        if int(num_clusters) != num_clusters:
            raise ValueError(f'`num_clusters` must be an integer, got {num_clusters!r}.')
        count = int(num_clusters)
    return max(1, min(count, num_tokens))


def sec_cluster_sizes(num_tokens: int, num_clusters: int) -> List[int]:
    """Sizes of the clusters, cut the way ``torch.tensor_split`` cuts.

    The first ``num_tokens % num_clusters`` clusters hold one token more than the others, so
    sizes differ by at most one and no token is dropped or padded.
    """
    base, extra = divmod(num_tokens, num_clusters)
    return [base + 1] * extra + [base] * (num_clusters - extra)


def sec_order(keys: Tensor) -> Tensor:
    """Token order that SEC clusters in.

    Args:
        keys (Tensor): ``(B, heads, L, d)``.

    Returns:
        Tensor: ``(B, heads, L)`` int64 indices sorting the tokens by ascending cosine similarity
        between each key and the mean key of its (batch item, head). Ties keep their original
        order (stable sort), so the result is reproducible. Computed in float32 (or float64)
        with autocast off, so mixed-precision training clusters as float32 training does.
    """
    # Half precision (of the keys, or of the product under autocast) would create ties and
    # move tokens into other clusters.
    keys = keys.detach()
    if keys.dtype in (torch.float16, torch.bfloat16):
        keys = keys.float()
    with torch.autocast(keys.device.type, enabled=False):
        center = F.normalize(keys.mean(dim=-2, keepdim=True), dim=-1)
        # cos(k, center) = (k . center) / |k|, without a normalised copy of the keys.
        similarity = (keys @ center.transpose(-2, -1)).squeeze(-1) / \
            torch.linalg.vector_norm(keys, dim=-1).clamp_min(1e-12)
    return _stable_argsort_rows(similarity)


def _stable_argsort_rows(values: Tensor) -> Tensor:
    """``torch.sort(values, dim=-1, stable=True).indices`` for float32 ``values``.

    On CPU every row is sorted at once as one flat int64 array of keys ``(row, value bits)``
    with a stable sort: integer sorts of a flat array use radix sort, several times faster
    than per-row comparison sorts of floats there, and 32 value bits plus a few row bits need
    few radix passes. Other devices (where this trick has not been measured to pay), other
    dtypes and keys that would not fit in 63 bits use ``torch.sort``.
    """
    if is_exporting():
        # ONNX has no stable sort. A plain sort exports to TopK, which breaks ties by the
        # lower index (ONNX operator spec), as this stable sort does.
        return torch.sort(values, dim=-1).indices
    if torch.jit.is_tracing():
        # Sizes are traced tensors here (e.g. FLOP counting); the plain sort traces.
        return torch.sort(values, dim=-1, stable=True).indices
    length = values.shape[-1]
    rows = values.numel() // max(length, 1)
    if values.device.type != 'cpu' or values.dtype != torch.float32 or \
            max(rows, 1).bit_length() + 32 > 63 or is_compiling():
        return torch.sort(values, dim=-1, stable=True).indices
    # Float bits -> unsigned integers in the same order: negative values have all bits
    # flipped, non-negative ones only the sign bit (-0.0 is made +0.0 first so they tie).
    bits = (values.reshape(rows, length) + 0.).view(torch.int32)
    bits = (bits ^ ((bits >> 31) | -2**31)).to(torch.int64) & 0xFFFFFFFF
    row = torch.arange(rows, device=values.device).unsqueeze(1)
    keys = ((row << 32) | bits).flatten()
    if keys.numel() < _RADIX_MIN_KEYS:
        # PyTorch's CPU sort takes radix sort only from this many keys on; padding with keys
        # above all others is cheaper than the comparison sort below it.
        keys = torch.cat([keys, keys.new_full((_RADIX_MIN_KEYS - keys.numel(), ), rows << 32)])
    flat = torch.sort(keys, stable=True).indices[:rows * length]
    return (flat.view(rows, length) - row * length).view(values.shape)


def inverse_permutation(order: Tensor) -> Tensor:
    """``inverse[..., order[..., i]] = i`` along the last axis (a scatter, not a second sort)."""
    positions = torch.arange(order.shape[-1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


def _source_rows(x: Tensor, index: Tensor) -> Tensor:
    """Row numbers (in units of ``d`` elements from ``x``'s storage offset) of
    ``x[b, h, index[b, h, i]]``; ``x`` must have a unit last stride and the other strides
    multiples of ``d``."""
    batch, heads, _, dims = x.shape
    stride_b, stride_h, stride_l = (stride // dims for stride in x.stride()[:3])
    first_row = (torch.arange(batch, device=x.device) * stride_b).view(-1, 1, 1) + \
        (torch.arange(heads, device=x.device) * stride_h).view(1, -1, 1)
    return index * stride_l + first_row


def _take_tokens(x: Tensor, index: Tensor, token_major: bool = False) -> Tensor:
    """``x[b, h, index[b, h, i]]`` for ``x`` of shape ``(B, heads, L, d)``.

    Every ``d``-vector is one row of memory, so this is one ``index_select`` of whole rows
    straight from ``x``'s storage, whatever its strides (e.g. a head-sliced view of a
    token-major ``(B, L, 3, heads, d)`` qkv tensor): several times faster on CPU than an
    element-wise ``torch.gather``. The result is contiguous ``(B, heads, L, d)``, or with
    ``token_major`` a ``(B, heads, L, d)`` view of contiguous ``(B, L, heads, d)`` memory, the
    layout the output projection reads.
    """
    batch, heads, length, dims = x.shape
    if index.numel() == 0:
        # Nothing to read (e.g. batch size 0), and the storage view below needs a row.
        length = index.shape[-1]
        if token_major:
            return x.new_empty(batch, length, heads, dims).transpose(1, 2)
        return x.new_empty(batch, heads, length, dims)
    if x.stride(-1) != 1 or any(stride % dims for stride in x.stride()[:3]):
        x = x.contiguous()
    # Every d-vector of x as one row of a (rows, d) view of its storage.
    last_row = sum((size - 1) * (stride // dims)
                   for size, stride in zip(x.shape[:3], x.stride()[:3]))
    rows = x.as_strided((last_row + 1, dims), (dims, 1))
    source = _source_rows(x, index)
    length = index.shape[-1]
    if token_major:
        return rows.index_select(0, source.transpose(1, 2).reshape(-1)).view(
            batch, length, heads, dims).transpose(1, 2)
    return rows.index_select(0, source.reshape(-1)).view(batch, heads, length, dims)


class _PermuteTokens(torch.autograd.Function):
    """Differentiable :func:`_take_tokens` for an index that permutes the tokens.

    The gradient of a permutation is the inverse permutation, so the backward pass is another
    row gather instead of the scatter-add autograd would use for ``gather``/``index_select``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor, inverse: Optional[Tensor],
                token_major: bool) -> Tensor:
        ctx.save_for_backward(index if inverse is None else inverse)
        ctx.inverse_given = inverse is not None
        return _take_tokens(x, index, token_major)

    @staticmethod
    def backward(ctx, grad: Tensor):
        saved, = ctx.saved_tensors
        inverse = saved if ctx.inverse_given else inverse_permutation(saved)
        return _PermuteTokens.apply(grad, inverse, saved if ctx.inverse_given else None,
                                    False), None, None, None


class _GatherTokens(torch.autograd.Function):
    """Differentiable :func:`_take_tokens` for any index (tokens may repeat or be left out);
    the backward pass adds the gradient rows back with one ``index_add_``."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        ctx.x_shape = x.shape
        return _take_tokens(x, index)

    @staticmethod
    def backward(ctx, grad: Tensor):
        index, = ctx.saved_tensors
        grad_x = grad.new_zeros(ctx.x_shape)
        dims = grad_x.shape[-1]
        grad_x.view(-1, dims).index_add_(0, _source_rows(grad_x, index).reshape(-1),
                                         grad.reshape(-1, dims))
        return grad_x, None


def gather_tokens(x: Tensor, order: Tensor) -> Tensor:
    """``x[b, h, order[b, h, i]]`` for ``x`` of shape ``(B, heads, L, d)`` and an index
    ``order`` of shape ``(B, heads, M)`` (any ``M``; entries may repeat); contiguous result."""
    if is_exporting():
        return gather_rows(x, order)
    return _GatherTokens.apply(x, order)


def permute_tokens(x: Tensor, order: Tensor, inverse: Optional[Tensor] = None) -> Tensor:
    """``x[b, h, order[b, h, i]]`` for an ``order`` that permutes the ``L`` tokens.

    Like :func:`gather_tokens`, but the gradient is the inverse permutation: a second row
    gather instead of a scatter-add (whose atomic adds are slow on GPUs).

    Args:
        x (Tensor): ``(B, heads, L, d)``.
        order (Tensor): ``(B, heads, L)``, a permutation of ``0..L-1`` in every row.
        inverse (Tensor, optional): Its inverse, when already computed.

    Returns:
        Tensor: Contiguous ``(B, heads, L, d)``.
    """
    return _PermuteTokens.apply(x, order, inverse, False)


def restore_tokens(x_sorted: Tensor, order: Tensor) -> Tensor:
    """Inverse of :func:`gather_tokens`: put every row back at its original position.

    The result is ``(B, heads, L, d)`` laid out token-major in memory (``(B, L, heads, d)``
    contiguous), so that ``out.transpose(1, 2).reshape(B, L, heads * d)`` is free.
    """
    if is_exporting():
        return gather_rows(x_sorted, inverse_permutation(order))
    return _PermuteTokens.apply(x_sorted, inverse_permutation(order), order, True)


def _attend_in_chunks(q: Tensor, k: Tensor, v: Tensor, num_chunks: int,
                      scale: float) -> Tensor:
    """Attention inside ``num_chunks`` equal contiguous chunks of the token axis."""
    batch, heads, length, _ = q.shape
    chunk = length // num_chunks
    # Chunks folded into the head axis: 4-D inputs take the fused (flash) kernels, 5-D ones
    # fall back to the unfused math path (about 3x slower on CPU).
    q, k, v = (t.reshape(batch, heads * num_chunks, chunk, t.shape[-1]) for t in (q, k, v))
    out = dot_product_attention(q, k, v, scale=scale)
    return out.reshape(batch, heads, length, out.shape[-1])


def _clustered_attention(q: Tensor, k: Tensor, v: Tensor, num_clusters: int,
                         scale: float) -> Tensor:
    """Attention inside the ``tensor_split`` clusters of already sorted tokens."""
    length = int(q.shape[2])  # a plain int also under torch.jit.trace (FLOP counting)
    base, extra = divmod(length, num_clusters)
    if extra == 0:
        return _attend_in_chunks(q, k, v, num_clusters, scale)
    # Uneven split: `extra` clusters of base+1 tokens, then the rest of base tokens. Two
    # batched calls, so nothing is padded and no mask is needed.
    split = extra * (base + 1)
    head = _attend_in_chunks(q[:, :, :split], k[:, :, :split], v[:, :, :split], extra, scale)
    tail = _attend_in_chunks(q[:, :, split:], k[:, :, split:], v[:, :, split:],
                             num_clusters - extra, scale)
    return torch.cat([head, tail], dim=2)


def sec_attention(q: Tensor,
                  k: Tensor,
                  v: Tensor,
                  num_clusters: Optional[int] = None,
                  cluster_size: Optional[int] = None,
                  scale: Optional[float] = None,
                  order: Optional[Tensor] = None) -> Tensor:
    """Semantic Equitable Clustering attention.

    Tokens of each (batch item, head) are sorted by the cosine similarity of their key to the
    mean key, the sorted sequence is cut into clusters whose sizes differ by at most one (as
    ``torch.tensor_split`` cuts), ``softmax(q k^T * scale) v`` runs inside every cluster, and
    the output rows are returned in the original token order. With one cluster this is plain
    global attention. The per-cluster attention is :func:`dot_product_attention`: GPUs run
    the fused ``scaled_dot_product_attention`` kernels, CPUs explicit matrix products for
    short clusters.

    Args:
        q (Tensor): Queries, ``(B, heads, L, d)``.
        k (Tensor): Keys, ``(B, heads, L, d)``.
        v (Tensor): Values, ``(B, heads, L, d_v)``.
        num_clusters (int, optional): Number of clusters (the papers' mode).
        cluster_size (int, optional): Tokens per cluster instead (``ceil(L / cluster_size)``
            clusters), so the cost grows linearly with ``L``. Exactly one of the two is given.
        scale (float, optional): Logit scale. Defaults to ``d ** -0.5`` like
            ``scaled_dot_product_attention``.
        order (Tensor, optional): ``(B, heads, L)`` token order to use instead of computing
            :func:`sec_order` of ``k`` (e.g. to share one order between calls).

    Returns:
        Tensor: ``(B, heads, L, d_v)``, rows in the original token order. With more than one
        cluster it is laid out token-major in memory (a transposed view of a contiguous
        ``(B, L, heads, d_v)``), so merging the heads afterwards costs no copy.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            'sec_attention expects q, k and v of shape (B, heads, L, d); got shapes '
            f'{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}. Reshape tokens of shape '
            '(B, L, C) to (B, heads, L, C // heads) first.')
    if q.shape != k.shape or q.shape[:3] != v.shape[:3]:
        raise ValueError(
            'sec_attention needs q and k of the same shape and v with the same (B, heads, L); '
            f'got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}.')
    length = q.shape[2]
    count = resolve_num_clusters(length, num_clusters, cluster_size)
    if scale is None:
        scale = q.shape[-1]**-0.5
    if count == 1 or q.numel() == 0:  # global attention, or nothing to cluster (B = 0)
        return dot_product_attention(q, k, v, scale=scale)

    if order is None:
        order = sec_order(k)
    elif order.shape != q.shape[:3]:
        raise ValueError(f'`order` must have shape {tuple(q.shape[:3])}, got {tuple(order.shape)}.')
    if is_exporting():
        # Gathers and one padded cluster layout: ops every exporter translates, any size.
        return sec_attention_exportable(q, k, v, order, count, scale)
    # One order and one inverse serve all gathers and the restore (and their gradients).
    inverse = inverse_permutation(order)
    q, k, v = (_PermuteTokens.apply(t, order, inverse, False) for t in (q, k, v))
    out = _clustered_attention(q, k, v, count, scale)
    return _PermuteTokens.apply(out, inverse, order, True)
