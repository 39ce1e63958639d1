"""SEC token merging: many tokens in, one token per group out.

The vision-language connector of the ICCV'25 SEC paper sorts the ``N`` vision tokens by the
cosine similarity of their keys to the mean key (:func:`sec_order`), splits the sorted sequence
into ``G`` groups and merges every group into one token by attention whose query is the mean of
the group's queries: ``Y_n = Attn(mean(Q_n), K_n, V_n)``.

Two group layouts over the sorted sequence:

- ``'interleaved'`` (the paper's): group ``n`` holds sorted positions ``n, n + G, n + 2G, ...``,
  so every group spans the whole similarity range.
- ``'sequential'`` (the paper's worse ablation, Table 15): group ``n`` holds neighbours in
  sorted order, cut into contiguous chunks as ``torch.tensor_split`` cuts.

When ``G`` does not divide ``N`` the groups differ in size by one token; the short groups are
padded with a masked slot, so no token is dropped and none counts twice.

Pure PyTorch on purpose: nothing here knows about mmengine, mmdet, mmseg or mmpretrain.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .sec_attention import gather_tokens, sec_cluster_sizes, sec_order

__all__ = ['SEC_MERGE_MODES', 'sec_merge_groups', 'sec_merge_attention']

SEC_MERGE_MODES = ('interleaved', 'sequential')


def sec_merge_groups(num_tokens: int,
                     num_groups: int,
                     merge: str = 'interleaved',
                     device: Optional[torch.device] = None) -> Tuple[Tensor, Tensor]:
    """Which sorted positions every group merges.

    Args:
        num_tokens (int): Tokens to merge, ``N``.
        num_groups (int): Groups (output tokens), ``G``; ``1 <= G <= N``.
        merge (str): ``'interleaved'`` or ``'sequential'`` (see the module docstring).
        device (torch.device, optional): Device of the returned tensors.

    Returns:
        tuple[Tensor, Tensor]: ``index`` (int64) and ``valid`` (bool), both ``(G, M)`` with
        ``M = ceil(N / G)``. ``index[n, m]`` is a position in the sorted sequence; slots with
        ``valid[n, m] == False`` are padding (their index is 0) and must be masked. Every
        position ``0 .. N-1`` appears in exactly one valid slot.
    """
    if merge not in SEC_MERGE_MODES:
        raise ValueError(f'`merge` must be one of {SEC_MERGE_MODES}, got {merge!r}.')
    if int(num_groups) != num_groups or not 1 <= num_groups <= num_tokens:
        raise ValueError(
            f'Cannot merge {num_tokens} tokens into {num_groups} groups: the number of groups '
            f'must be an integer between 1 and the number of tokens ({num_tokens}). Use fewer '
            'output tokens or more input tokens.')
    slots = -(-num_tokens // num_groups)  # ceil
    group = torch.arange(num_groups, device=device).unsqueeze(1)
    slot = torch.arange(slots, device=device).unsqueeze(0)
    if merge == 'interleaved':
        index = group + slot * num_groups
        valid = index < num_tokens
    else:
        sizes = torch.tensor(sec_cluster_sizes(num_tokens, num_groups), device=device)
        starts = (torch.cumsum(sizes, 0) - sizes).unsqueeze(1)
        index = starts + slot
        valid = slot < sizes.unsqueeze(1)
    return index.masked_fill(~valid, 0), valid


def sec_merge_attention(q: Tensor,
                        k: Tensor,
                        v: Tensor,
                        num_groups: int,
                        merge: str = 'interleaved',
                        scale: Optional[float] = None,
                        order: Optional[Tensor] = None) -> Tensor:
    """Merge ``N`` tokens into ``G`` by SEC grouping and mean-query attention.

    Args:
        q (Tensor): Queries, ``(B, heads, N, d)``.
        k (Tensor): Keys, ``(B, heads, N, d)``.
        v (Tensor): Values, ``(B, heads, N, d_v)``.
        num_groups (int): Output tokens ``G`` (``1 <= G <= N``).
        merge (str): ``'interleaved'`` (default, the paper's) or ``'sequential'``.
        scale (float, optional): Logit scale; defaults to ``d ** -0.5``.
        order (Tensor, optional): Token order, ``(B, heads, N)`` or ``(B, 1, N)`` (shared by
            all heads). Defaults to one order per batch item: :func:`sec_order` of the keys of
            all heads concatenated, so that output token ``n`` of every head merges the same
            input tokens.

    Returns:
        Tensor: ``(B, heads, G, d_v)``; output token ``n`` is group ``n``.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            'sec_merge_attention expects q, k and v of shape (B, heads, N, d); got shapes '
            f'{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}.')
    if q.shape != k.shape or q.shape[:3] != v.shape[:3]:
        raise ValueError(
            'sec_merge_attention needs q and k of the same shape and v with the same '
            f'(B, heads, N); got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}.')
    batch, heads, num_tokens, _ = q.shape
    index, valid = sec_merge_groups(num_tokens, num_groups, merge, device=q.device)
    if scale is None:
        scale = q.shape[-1]**-0.5

    if order is None:
        # (B, heads, N, d) -> (B, 1, N, heads * d): one similarity per token over all heads.
        order = sec_order(
            k.transpose(1, 2).reshape(batch, 1, num_tokens, heads * k.shape[-1]))
    if order.dim() != 3 or order.shape[0] != batch or order.shape[2] != num_tokens or \
            order.shape[1] not in (1, heads):
        raise ValueError(f'`order` must have shape ({batch}, {heads} or 1, {num_tokens}), got '
                         f'{tuple(order.shape)}.')
    # Input token of every (group, slot): order[b, h, index[n, m]].
    token_index = order[:, :, index.flatten()].expand(batch, heads, -1)

    groups, slots = index.shape
    q, k, v = (gather_tokens(t, token_index).reshape(batch, heads, groups, slots, t.shape[-1])
               for t in (q, k, v))
    weight = valid.to(q.dtype).unsqueeze(-1)  # (G, M, 1)
    pooled_q = (q * weight).sum(-2, keepdim=True) / weight.sum(-2, keepdim=True)
    # One query per group attends to that group's real (unpadded) slots only.
    out = F.scaled_dot_product_attention(
        pooled_q, k, v, attn_mask=valid.unsqueeze(1), scale=scale)
    return out.squeeze(-2)
