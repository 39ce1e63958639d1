"""SEC attention in operators that exporters translate (ONNX, ``torch.export``).

The eager op (:mod:`.sec_attention`) attends, when the clusters differ in size, in two calls
whose sizes are Python integers, which would freeze one input size into an exported graph (its
primitives already export: :mod:`.dispatch` gives exporters plain gathers and a plain sort).
Here the same result comes from ``gather`` and a single attention call over a padded cluster
layout whose sizes all follow from the token count, so one exported graph serves every size.

Pure PyTorch on purpose: nothing here knows about mmengine, mmdet, mmseg or mmpretrain.
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['gather_rows', 'padded_cluster_layout', 'sec_attention_exportable']


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, h, index[b, h, i]]`` for ``x`` ``(B, heads, L, d)`` and ``index``
    ``(B, heads, M)``, as one ``gather`` (ONNX ``GatherElements``)."""
    return x.gather(2, index.unsqueeze(-1).expand(-1, -1, -1, x.shape[-1]))


def padded_cluster_layout(length, num_clusters: int,
                          device=None) -> Tuple[Tensor, Tensor, Tensor]:
    """The clusters of :func:`~sec_mm.ops.sec_cluster_sizes`, padded to one size.

    ``L`` sorted tokens are cut into ``G`` clusters as ``torch.tensor_split`` cuts them (the
    first ``L % G`` hold one token more); every cluster gets ``S = ceil(L / G)`` slots, and the
    short ones a padding slot. ``length`` may be a symbolic size (an exported input size).

    Args:
        length (int): Tokens ``L``.
        num_clusters (int): Clusters ``G``, ``1 <= G <= L``.
        device (torch.device, optional): Device of the results.

    Returns:
        tuple[Tensor, Tensor, Tensor]: ``positions`` ``(G, S)`` int64, the sorted position in
        every slot (padding slots repeat the last token); ``valid`` ``(G, S)`` bool, False on
        padding; ``slot_of`` ``(L, )`` int64, the flat slot ``g * S + s`` of every sorted
        position.
    """
    base, extra = length // num_clusters, length % num_clusters
    size = (length + num_clusters - 1) // num_clusters
    cluster = torch.arange(num_clusters, device=device)
    slot = torch.arange(size, device=device)
    start = cluster * base + cluster.clamp(max=extra)
    valid = slot < (base + (cluster < extra).long()).unsqueeze(1)
    positions = (start.unsqueeze(1) + slot).clamp(max=length - 1)
    # The cluster of every sorted position: the first `extra` clusters have base + 1 tokens.
    position = torch.arange(length, device=device)
    split = extra * (base + 1)
    owner = torch.where(position < split, position // (base + 1),
                        extra + (position - split) // base)
    slot_of = owner * size + position - (owner * base + owner.clamp(max=extra))
    return positions, valid, slot_of


def sec_attention_exportable(q: Tensor, k: Tensor, v: Tensor, order: Tensor,
                             num_clusters: int, scale: float) -> Tensor:
    """:func:`~sec_mm.ops.sec_attention` for a given token order, in exportable operators.

    Args:
        q (Tensor): ``(B, heads, L, d)``.
        k (Tensor): ``(B, heads, L, d)``.
        v (Tensor): ``(B, heads, L, d_v)``.
        order (Tensor): ``(B, heads, L)`` token order (:func:`~sec_mm.ops.sec_order`).
        num_clusters (int): Clusters, ``2 <= G <= L``.
        scale (float): Logit scale.

    Returns:
        Tensor: ``(B, heads, L, d_v)``, rows in the original token order.
    """
    batch, heads, length, _ = q.shape
    positions, valid, slot_of = padded_cluster_layout(length, num_clusters, q.device)
    clusters, size = positions.shape
    # The token in every slot, then its q, k, v rows: (B, heads * G, S, d).
    tokens = order.index_select(2, positions.flatten())
    q, k, v = (gather_rows(t, tokens).reshape(batch, heads * clusters, size, t.shape[-1])
               for t in (q, k, v))
    # Padding slots are masked as keys; their query rows are computed and never read.
    mask = valid.unsqueeze(1).repeat(heads, 1, 1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    out = out.reshape(batch, heads, clusters * size, out.shape[-1])
    # Every token's row: the slot of its sorted position (inverse[order[i]] = i).
    positions_of = torch.arange(length, device=order.device).expand_as(order)
    inverse = torch.zeros_like(order).scatter(-1, order, positions_of)
    return gather_rows(out, slot_of[inverse])
