"""Semantic Equitable Clustering (SEC) attention as a functional op.

SEC groups tokens by meaning instead of by position: every key is compared (cosine
similarity) with the mean key of its (batch item, head), tokens are sorted by that similarity,
the sorted sequence is cut into equal clusters and attention runs inside each cluster. The
output rows go back to their tokens' original positions.

Pure PyTorch on purpose: nothing here knows about mmengine, mmdet, mmseg or mmpretrain.
"""
import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    'sec_attention', 'sec_order', 'sec_cluster_sizes', 'resolve_num_clusters',
    'gather_tokens', 'restore_tokens'
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
        order (stable sort), so the result is reproducible.
    """
    # Similarity in float32 at least: half precision would create ties and change the order.
    keys = keys.detach()
    if keys.dtype in (torch.float16, torch.bfloat16):
        keys = keys.float()
    center = F.normalize(keys.mean(dim=-2, keepdim=True), dim=-1)
    similarity = (F.normalize(keys, dim=-1) @ center.transpose(-2, -1)).squeeze(-1)
    return torch.sort(similarity, dim=-1, stable=True).indices


def gather_tokens(x: Tensor, order: Tensor) -> Tensor:
    """``x[b, h, order[b, h, i]]`` for ``x`` of shape ``(B, heads, L, d)``."""
    return torch.gather(x, 2, order.unsqueeze(-1).expand(-1, -1, -1, x.shape[-1]))


def restore_tokens(x_sorted: Tensor, order: Tensor) -> Tensor:
    """Inverse of :func:`gather_tokens`: put every row back at its original position."""
    index = order.unsqueeze(-1).expand(-1, -1, -1, x_sorted.shape[-1])
    return torch.empty_like(x_sorted).scatter_(2, index, x_sorted)


def _attend_in_chunks(q: Tensor, k: Tensor, v: Tensor, num_chunks: int,
                      scale: float) -> Tensor:
    """Attention inside ``num_chunks`` equal contiguous chunks of the token axis."""
    batch, heads, length, _ = q.shape
    chunk = length // num_chunks
    q, k, v = (t.reshape(batch, heads, num_chunks, chunk, t.shape[-1]) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, scale=scale)
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
    global attention. The per-cluster attention is ``scaled_dot_product_attention``, so GPUs
    use fused kernels.

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
        Tensor: ``(B, heads, L, d_v)``, rows in the original token order.
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
    if count == 1:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)

    if order is None:
        order = sec_order(k)
    elif order.shape != q.shape[:3]:
        raise ValueError(f'`order` must have shape {tuple(q.shape[:3])}, got {tuple(order.shape)}.')
    out = _clustered_attention(
        gather_tokens(q, order), gather_tokens(k, order), gather_tokens(v, order), count, scale)
    return restore_tokens(out, order)
