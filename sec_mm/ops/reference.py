"""The definition of SEC attention, written as directly as possible, in float64.

Slow (Python loops over batch items, heads and clusters) and meant for checking the fast op
(:func:`sec_mm.ops.sec_attention`) on any device and dtype, and for reading.

Pure PyTorch on purpose: nothing here knows about mmengine, mmdet, mmseg or mmpretrain.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['sec_attention_reference']


def sec_attention_reference(q: Tensor,
                            k: Tensor,
                            v: Tensor,
                            num_clusters: Optional[int] = None,
                            cluster_size: Optional[int] = None,
                            scale: Optional[float] = None) -> Tensor:
    """SEC attention in float64 on the CPU.

    For every (batch item, head): sort the tokens by the cosine similarity of their key to
    the mean key (stable, ascending), cut the sorted tokens into clusters as
    ``torch.tensor_split`` does, attend inside every cluster, write every output row at its
    token's position.

    Args:
        q (Tensor): ``(B, heads, L, d)``.
        k (Tensor): ``(B, heads, L, d)``.
        v (Tensor): ``(B, heads, L, d_v)``.
        num_clusters (int, optional): Clusters; ``<= 1`` is global attention.
        cluster_size (int, optional): Tokens per cluster instead (``ceil(L / size)``
            clusters). Exactly one of the two is given.
        scale (float, optional): Logit scale, ``d ** -0.5`` by default.

    Returns:
        Tensor: float64 ``(B, heads, L, d_v)`` on the CPU, differentiable in q, k and v.
    """
    q, k, v = (t.cpu().double() for t in (q, k, v))  # differentiable: gradients too
    length = q.shape[2]
    if cluster_size is not None:
        num_clusters = math.ceil(length / cluster_size)
    num_clusters = max(1, min(num_clusters, length))
    scale = q.shape[-1]**-0.5 if scale is None else scale
    out = torch.empty(*q.shape[:3], v.shape[-1], dtype=torch.float64)
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            keys = k[b, h]
            similarity = F.cosine_similarity(keys, keys.mean(0, keepdim=True), dim=-1)
            order = torch.sort(similarity, stable=True).indices
            for cluster in torch.tensor_split(order, num_clusters):
                logits = q[b, h, cluster] @ keys[cluster].T * scale
                out[b, h, cluster] = logits.softmax(-1) @ v[b, h, cluster]
    return out
