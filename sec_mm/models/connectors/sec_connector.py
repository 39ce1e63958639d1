"""The SEC vision-language connector: ``N`` vision tokens in, ``G`` language-model tokens out."""
import re
from typing import Dict, List

import torch
import torch.nn as nn
from torch import Tensor

from sec_mm.ops import SEC_MERGE_MODES, sec_merge_attention, sec_merge_groups, sec_order

# Stock LLaVA projector keys (``nn.Linear`` for depth 1, ``nn.Sequential`` otherwise).
_STOCK_PROJECTOR_KEY = re.compile(r'^(\d+\.)?(weight|bias)$')


def build_llava_projector(in_channels: int, out_channels: int, depth: int) -> nn.Module:
    """LLaVA's MLP projector: ``depth`` linear layers with GELU between them.

    Depth 1 is LLaVA's linear projector, depth 2 LLaVA-1.5's MLP; depth 0 is the identity and
    needs ``in_channels == out_channels``. The layout (``0``, ``2``, ... for the linears) is the
    one of mmpretrain's LLaVA, so its projector weights load into it.
    """
    if int(depth) != depth or depth < 0:
        raise ValueError(f'`proj_depth` must be a non-negative integer, got {depth!r}.')
    if depth == 0:
        if in_channels != out_channels:
            raise ValueError(
                f'proj_depth=0 (no projector) needs in_channels == out_channels; got '
                f'{in_channels} and {out_channels}. Use proj_depth >= 1 to project.')
        return nn.Identity()
    layers: List[nn.Module] = [nn.Linear(in_channels, out_channels)]
    for _ in range(1, depth):
        layers += [nn.GELU(), nn.Linear(out_channels, out_channels)]
    return nn.Sequential(*layers)


class SECConnector(nn.Module):
    """Merge vision tokens by Semantic Equitable Clustering, then project them (LLaVA MLP).

    The ICCV'25 SEC connector for LLaVA-style models. Vision tokens are projected to
    queries, keys and values (multi-head); one token order per image sorts the tokens by the
    cosine similarity of their key (all heads together) to the mean key; the sorted sequence
    is cut into ``num_tokens`` groups and every group becomes one token,
    ``Y_n = Attn(mean(Q_n), K_n, V_n)`` (:func:`sec_mm.ops.sec_merge_attention`), followed
    by an output projection and LLaVA's MLP projector.

    With ``merge='interleaved'`` (the paper's) output token ``n`` merges sorted positions
    ``n, n + G, n + 2G, ...``; ``merge='sequential'`` merges neighbours in sorted order (the
    paper's ablation, clearly worse: paper Table 15). When ``G`` does not divide ``N`` the first
    ``N % G`` groups hold one token more than the others; every token is merged exactly once,
    none is dropped or padded into the result.

    Initialisation: values and output projection start as the identity and queries/keys near
    zero, so a fresh connector outputs the projector applied to the plain average of every
    group's tokens. A pretrained LLaVA projector therefore keeps seeing vision features of the
    scale it was trained on; its weights load directly (``state_dict`` keys ``0.weight``,
    ``2.weight``, ... of mmpretrain's LLaVA projector are accepted as ``projector.*``).

    Args:
        in_channels (int): Channels ``C`` of the vision tokens (``mm_hidden_size`` in LLaVA).
        out_channels (int): Channels of the language model's embeddings.
        num_tokens (int): Output tokens ``G`` (e.g. 288, 256, 192, 144 for 576 inputs).
        num_heads (int): Heads of the merging attention; ``C`` must be divisible by it.
            Defaults to 16 (64 channels per head for CLIP ViT-L).
        merge (str): ``'interleaved'`` (default) or ``'sequential'``.
        proj_depth (int): Linear layers of the MLP projector (1 = LLaVA, 2 = LLaVA-1.5,
            0 = none). Defaults to 2.
        with_cls_token (bool): Token 0 of the input is a class token: it is kept as is (not
            merged, not used for the order) and only goes through the MLP projector, in
            front of the merged tokens. Defaults to False.
        qkv_bias (bool): Bias of the query, key and value projections. Defaults to True.

    Shape:
        - x: ``(B, N, C)``, or ``(B, 1 + N, C)`` with ``with_cls_token``.
        - output: ``(B, G, out_channels)``, or ``(B, 1 + G, out_channels)`` with
          ``with_cls_token``.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 num_tokens: int,
                 num_heads: int = 16,
                 merge: str = 'interleaved',
                 proj_depth: int = 2,
                 with_cls_token: bool = False,
                 qkv_bias: bool = True) -> None:
        super().__init__()
        if merge not in SEC_MERGE_MODES:
            raise ValueError(f'`merge` must be one of {SEC_MERGE_MODES}, got {merge!r}.')
        if int(num_tokens) != num_tokens or num_tokens < 1:
            raise ValueError(f'`num_tokens` must be a positive integer, got {num_tokens!r}.')
        if int(num_heads) != num_heads or num_heads < 1 or in_channels % num_heads != 0:
            raise ValueError(
                f'in_channels ({in_channels}) must be divisible by num_heads ({num_heads}); '
                'pick num_heads among the divisors of in_channels.')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_tokens = int(num_tokens)
        self.num_heads = int(num_heads)
        self.head_dims = in_channels // self.num_heads
        self.merge = merge
        self.with_cls_token = with_cls_token

        self.q_proj = nn.Linear(in_channels, in_channels, bias=qkv_bias)
        self.k_proj = nn.Linear(in_channels, in_channels, bias=qkv_bias)
        self.v_proj = nn.Linear(in_channels, in_channels, bias=qkv_bias)
        self.out_proj = nn.Linear(in_channels, in_channels)
        self.projector = build_llava_projector(in_channels, out_channels, proj_depth)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Identity values/output, near-zero queries/keys (see the class docstring)."""
        for linear in (self.q_proj, self.k_proj):
            nn.init.trunc_normal_(linear.weight, std=.02)
        for linear in (self.v_proj, self.out_proj):
            nn.init.eye_(linear.weight)
        for linear in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, out_channels={self.out_channels}, '
                f'num_tokens={self.num_tokens}, num_heads={self.num_heads}, '
                f'merge={self.merge!r}, with_cls_token={self.with_cls_token}')

    def num_output_tokens(self) -> int:
        """Tokens per image handed to the language model: ``G`` (+1 with a class token)."""
        return self.num_tokens + int(self.with_cls_token)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 3:
            raise ValueError(
                f'SECConnector expects vision tokens of shape (B, N, C), got {tuple(x.shape)}. '
                'Flatten a (B, C, H, W) feature map with x.flatten(2).transpose(1, 2) first.')
        if x.shape[-1] != self.in_channels:
            raise ValueError(
                f'SECConnector was built for {self.in_channels}-channel tokens (in_channels) '
                f'but got {x.shape[-1]} channels; set in_channels (mm_hidden_size in LLaVA) to '
                'the vision encoder\'s width.')
        num_merged = x.shape[1] - int(self.with_cls_token)
        if num_merged < self.num_tokens:
            cls_note = ' after the class token' if self.with_cls_token else ''
            raise ValueError(
                f'SECConnector cannot merge {num_merged} vision tokens{cls_note} into '
                f'num_tokens={self.num_tokens}: it only reduces the token count. Use '
                f'num_tokens <= {max(num_merged, 0)}.')

    def forward(self, x: Tensor) -> Tensor:
        """Merge and project vision tokens.

        Args:
            x (Tensor): ``(B, N, C)`` vision tokens, or ``(B, 1 + N, C)`` with the class
                token first when ``with_cls_token``.

        Returns:
            Tensor: ``(B, G, out_channels)``, or ``(B, 1 + G, out_channels)`` with the
            projected class token first.
        """
        self._check_input(x)
        if self.with_cls_token:
            cls_token, x = x[:, :1], x[:, 1:]
        batch, length, channels = x.shape

        def heads(t: Tensor) -> Tensor:  # (B, N, C) -> (B, heads, N, d)
            return t.reshape(batch, length, self.num_heads, self.head_dims).transpose(1, 2)

        merged = sec_merge_attention(
            heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)),
            self.num_tokens, merge=self.merge)
        merged = self.out_proj(merged.transpose(1, 2).reshape(batch, self.num_tokens, channels))
        if self.with_cls_token:
            merged = torch.cat([cls_token, merged], dim=1)
        return self.projector(merged)

    @torch.no_grad()
    def group_index(self, x: Tensor) -> Tensor:
        """Which output token every input vision token is merged into.

        Args:
            x (Tensor): The connector's input, as in :meth:`forward`.

        Returns:
            Tensor: ``(B, N)`` int64 group of every (non-class) input token, ``0 .. G-1``;
            useful to visualise the clusters on the image.
        """
        self._check_input(x)
        if self.with_cls_token:
            x = x[:, 1:]
        # The same order sec_merge_attention derives from the keys of all heads.
        order = sec_order(self.k_proj(x).unsqueeze(1)).squeeze(1)
        index, valid = sec_merge_groups(x.shape[1], self.num_tokens, self.merge, x.device)
        group_of_slot = torch.arange(self.num_tokens, device=x.device).unsqueeze(1)
        group_of_slot = group_of_slot.expand_as(index)
        group_of_sorted = torch.empty(x.shape[1], dtype=torch.long, device=x.device)
        group_of_sorted[index[valid]] = group_of_slot[valid]
        groups = torch.empty_like(order)
        return groups.scatter_(1, order, group_of_sorted.expand_as(order))

    def _load_from_state_dict(self, state_dict: Dict[str, Tensor], prefix: str, *args,
                              **kwargs) -> None:
        # Accept a stock LLaVA projector's keys (``<prefix>0.weight``, ``<prefix>weight``)
        # as this connector's MLP projector.
        for key in [k for k in state_dict if k.startswith(prefix)]:
            local = key[len(prefix):]
            if _STOCK_PROJECTOR_KEY.match(local):
                if local[0].isdigit():
                    target = f'{prefix}projector.{local}'
                else:  # depth 1: a bare nn.Linear
                    target = f'{prefix}projector.0.{local}'
                if target not in state_dict:
                    state_dict[target] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
