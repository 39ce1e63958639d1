"""Semantic Equitable Clustering (SEC) attention as a functional op.

SEC groups tokens by meaning instead of by position. For every (batch item, head):

1. order (:func:`sec_order`): sort the tokens by the cosine similarity of their key to the
   mean key;
2. gather (:func:`permute_tokens`): put q, k and v in that order;
3. attend (:func:`cluster_attention`): cut the sorted tokens into clusters whose sizes differ
   by at most one and run attention inside every cluster;
4. restore (:func:`restore_tokens`): put every output row back at its token's position.

:func:`sec_mm.ops.reference.sec_attention_reference` states the same in float64 loops. The
primitives (sort, row gathers, dense attention) come from :mod:`sec_mm.ops.dispatch`, which
picks device-specific kernels for them.

Pure PyTorch on purpose: nothing here knows about mmengine, mmdet, mmseg or mmpretrain.
"""
import math
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import dispatch
from .compat import is_exporting
from .dispatch import inverse_permutation
from .sec_attention_export import sec_attention_exportable

__all__ = [
    'sec_attention', 'sec_order', 'cluster_attention', 'sec_cluster_sizes',
    'resolve_num_clusters', 'gather_tokens', 'permute_tokens', 'restore_tokens',
    'inverse_permutation'
]


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
    return dispatch.stable_argsort(similarity)


def gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """Tokens ``x[b, h, index[b, h, i]]``.

    Args:
        x (Tensor): ``(B, heads, L, d)``.
        index (Tensor): ``(B, heads, M)``, any ``M``; entries may repeat.

    Returns:
        Tensor: Contiguous ``(B, heads, M, d)``.
    """
    return dispatch.gather_rows(x, index)


def permute_tokens(x: Tensor, order: Tensor, inverse: Optional[Tensor] = None) -> Tensor:
    """Tokens in SEC order, ``x[b, h, order[b, h, i]]``, for an ``order`` that permutes them.

    Args:
        x (Tensor): ``(B, heads, L, d)``.
        order (Tensor): ``(B, heads, L)``, a permutation of ``0..L-1`` in every row.
        inverse (Tensor, optional): :func:`inverse_permutation` of ``order``, when already
            computed.

    Returns:
        Tensor: Contiguous ``(B, heads, L, d)``.
    """
    return dispatch.permute_rows(x, order, inverse)


def restore_tokens(x_sorted: Tensor, order: Tensor, inverse: Optional[Tensor] = None) -> Tensor:
    """Inverse of :func:`permute_tokens`: every row back at its token's original position.

    Args:
        x_sorted (Tensor): ``(B, heads, L, d)`` in the order ``order``.
        order (Tensor): ``(B, heads, L)``, the permutation that sorted the tokens.
        inverse (Tensor, optional): :func:`inverse_permutation` of ``order``.

    Returns:
        Tensor: ``(B, heads, L, d)`` laid out token-major in memory (``(B, L, heads, d)``
        contiguous), so that ``out.transpose(1, 2).reshape(B, L, heads * d)`` is free.
    """
    return dispatch.scatter_rows(x_sorted, order, inverse)


def _attend_in_chunks(q: Tensor, k: Tensor, v: Tensor, num_chunks: int,
                      scale: float) -> Tensor:
    """Attention inside ``num_chunks`` equal contiguous chunks of the token axis."""
    batch, heads, length, _ = q.shape
    chunk = length // num_chunks
    # Chunks folded into the head axis: 4-D inputs take the fused kernels of
    # scaled_dot_product_attention, 5-D ones its unfused math path.
    q, k, v = (t.reshape(batch, heads * num_chunks, chunk, t.shape[-1]) for t in (q, k, v))
    out = dispatch.attention(q, k, v, scale=scale)
    return out.reshape(batch, heads, length, out.shape[-1])


def cluster_attention(q: Tensor, k: Tensor, v: Tensor, num_clusters: int,
                      scale: float) -> Tensor:
    """Attention inside the clusters of tokens already in SEC order.

    The ``L`` tokens are cut as ``torch.tensor_split`` cuts them (:func:`sec_cluster_sizes`):
    the first ``L % num_clusters`` clusters hold one token more. Clusters of one size run as
    one batched call, so nothing is padded and no mask is needed.

    Args:
        q (Tensor): ``(B, heads, L, d)``, sorted.
        k (Tensor): ``(B, heads, L, d)``, sorted.
        v (Tensor): ``(B, heads, L, d_v)``, sorted.
        num_clusters (int): Clusters, ``1 <= G <= L``.
        scale (float): Logit scale.

    Returns:
        Tensor: ``(B, heads, L, d_v)``, in the sorted order.
    """
    length = int(q.shape[2])  # a plain int also under torch.jit.trace (FLOP counting)
    base, extra = divmod(length, num_clusters)
    if extra == 0:
        return _attend_in_chunks(q, k, v, num_clusters, scale)
    split = extra * (base + 1)  # `extra` clusters of base + 1 tokens, then base tokens
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
    global attention.

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
        return dispatch.attention(q, k, v, scale=scale)

    if order is None:
        order = sec_order(k)
    elif order.shape != q.shape[:3]:
        raise ValueError(f'`order` must have shape {tuple(q.shape[:3])}, got {tuple(order.shape)}.')
    if is_exporting():
        # Gathers and one padded cluster layout: ops every exporter translates, any size.
        return sec_attention_exportable(q, k, v, order, count, scale)
    # One order and one inverse serve all gathers and the restore (and their gradients).
    inverse = inverse_permutation(order)
    q, k, v = (permute_tokens(t, order, inverse) for t in (q, k, v))
    out = cluster_attention(q, k, v, count, scale)
    return restore_tokens(out, order, inverse)
