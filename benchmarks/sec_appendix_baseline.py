"""The SEC attention layer as the paper's appendix writes it (paper 001, section "E Code",
class ``SECA``), for benchmarks only: a straightforward baseline to measure ``sec_mm`` against.

Written from the paper's listing, with only what is needed to compare it with
:class:`sec_mm.models.layers.SECAttention`:

- the listing's last line returns ``self.out_proj(res)`` with ``res`` undefined; the attention
  output ``v`` is what it means and what is projected here;
- ``use_rope`` / ``use_lce`` (both off by default, i.e. the listing as printed) add the two parts
  the released layer has and the appendix omits, in the simplest way: 2-D RoPE on q and k before
  the key scaling (the caller passes the stage's ``(sin, cos)`` tables, as the release computes
  them once per stage) and the LCE depthwise 5x5 conv of the values, added before ``out_proj``.
  With both on, the layer computes what the released SECViT layer computes;
- ``load_from_sec_mm`` copies the weights of a ``SECAttention`` (whose ``proj`` is ``out_proj``
  here) so both compute the same function.

Everything else (einops rearranges, unstable ``argsort`` of the similarity, a gather per tensor,
``softmax(q k^T) v`` with explicit matrices, restore by a second sort) is as printed.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange


def rotate_every_two(x: torch.Tensor) -> torch.Tensor:
    """``(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)`` along the last axis."""
    x1 = x[..., ::2]
    x2 = x[..., 1::2]
    return torch.stack([-x2, x1], dim=-1).flatten(-2)


def rope_tables(height: int, width: int, head_dim: int,
                device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(sin, cos)`` of the release's 2-D RoPE, each ``(height * width, head_dim)``."""
    angle = 1. / (10000**torch.linspace(0, 1, head_dim // 4, device=device))
    angle = angle.unsqueeze(-1).repeat(1, 2).flatten()
    index_h = torch.arange(height, device=device).float()
    index_w = torch.arange(width, device=device).float()
    sin_h = torch.sin(index_h[:, None] * angle[None, :])  # (h, d/2)
    sin_w = torch.sin(index_w[:, None] * angle[None, :])  # (w, d/2)
    sin_h = sin_h.unsqueeze(1).repeat(1, width, 1)
    sin_w = sin_w.unsqueeze(0).repeat(height, 1, 1)
    sin = torch.cat([sin_h, sin_w], -1).flatten(0, 1)
    cos_h = torch.cos(index_h[:, None] * angle[None, :])
    cos_w = torch.cos(index_w[:, None] * angle[None, :])
    cos_h = cos_h.unsqueeze(1).repeat(1, width, 1)
    cos_w = cos_w.unsqueeze(0).repeat(height, 1, 1)
    cos = torch.cat([cos_h, cos_w], -1).flatten(0, 1)
    return sin, cos


class SECA(nn.Module):
    """The appendix's SEC attention, ``(b, c, h, w) -> (b, c, h, w)``.

    Args:
        embed_dim (int): Channels.
        num_heads (int): Heads.
        num_clusters (int): Clusters; ``<= 1`` is global attention.
        use_rope (bool): Add 2-D RoPE (not in the appendix). Defaults to False.
        use_lce (bool): Add the LCE conv of the values (not in the appendix). Defaults to False.
    """

    def __init__(self, embed_dim, num_heads, num_clusters, use_rope=False, use_lce=False):
        super().__init__()
        self.num_clusters = num_clusters
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.qkv = nn.Conv2d(embed_dim, embed_dim * 3, 1, bias=True)
        self.out_proj = nn.Conv2d(embed_dim, embed_dim, 1, bias=True)
        self.use_rope = use_rope
        self.lce = nn.Conv2d(embed_dim, embed_dim, 5, 1, 2, groups=embed_dim) if use_lce else None

    def sort_sim(self, q: torch.Tensor, k: torch.Tensor):
        '''
        q: b n (h w) d
        k: b n (h w) d
        '''
        cls_token = q.mean(2, keepdim=True)  # (b n 1 d)
        cls_token = F.normalize(cls_token, dim=-1)
        k = F.normalize(k, dim=-1)
        cos_sim = cls_token @ k.transpose(-1, -2)  # (b n 1 (h w))
        sort_indices = torch.argsort(cos_sim, dim=-1)
        return sort_indices.squeeze(2)  # (b n (h w))

    def sort_tensor(self, indices: torch.Tensor, target: torch.Tensor):
        '''
        indices: (b n l)
        target: (b n l d)
        '''
        return torch.gather(target, dim=-2, index=indices.unsqueeze(-1).expand_as(target))

    def restore_tensor(self, indices: torch.Tensor, target: torch.Tensor):
        '''
        indices: (b n l)
        target: (b n l d)
        '''
        return torch.gather(
            target, dim=-2, index=indices.sort(dim=-1).indices.unsqueeze(-1).expand_as(target))

    def forward(self, x: torch.Tensor,
                rope: Optional[Tuple[torch.Tensor, torch.Tensor]] = None):
        '''
        x: (b c h w)
        rope: (sin, cos) tables, each ((h w) d); only used with use_rope
        '''
        bsz, _, h, w = x.size()
        l = h * w
        if self.num_clusters > 1:
            assert l % self.num_clusters == 0
        qkv = self.qkv(x)  # (b 3*c h w)
        if self.lce is not None:  # added: LCE of the values, in image layout
            lce = self.lce(qkv[:, 2 * self.embed_dim:])

        q, k, v = rearrange(qkv, 'b (m n d) h w -> m b n (h w) d', m=3, n=self.num_heads)
        # q, k, v -> b n (h w) d
        if self.use_rope:  # added: 2-D RoPE of q and k
            sin, cos = rope if rope is not None else rope_tables(h, w, self.head_dim, x.device)
            q = q * cos + rotate_every_two(q) * sin
            k = k * cos + rotate_every_two(k) * sin
        k = k * self.scaling

        if self.num_clusters > 1:
            indices = self.sort_sim(k, k)  # (b n (h w))
            q = self.sort_tensor(indices, q)  # (b n (h w) d)
            k = self.sort_tensor(indices, k)  # (b n (h w) d)
            v = self.sort_tensor(indices, v)  # (b n (h w) d)

            q_l = rearrange(q, 'b n (c l) d -> b n c l d', c=self.num_clusters)
            k_l = rearrange(k, 'b n (c l) d -> b n c l d', c=self.num_clusters)
            v = rearrange(v, 'b n (c l) d -> b n c l d', c=self.num_clusters)
            attn = torch.softmax(q_l @ k_l.transpose(-1, -2), dim=-1)  # (b n c l l)
            v = attn @ v  # (b n c l d)

            v = rearrange(v, 'b n c l d -> b n (c l) d')
            v = self.restore_tensor(indices, v)  # (b n (h w) d)
            v = rearrange(v, 'b n (h w) d -> b (n d) h w', h=h, w=w)
        else:
            attn = torch.softmax(q @ k.transpose(-1, -2), dim=-1)  # (b n (h w) (h w))
            v = attn @ v  # (b n (h w) d)
            v = rearrange(v, 'b n (h w) d -> b (n d) h w', h=h, w=w)
        if self.lce is not None:
            v = v + lce
        return self.out_proj(v)  # the listing's `res` is this `v`

    @torch.no_grad()
    def load_from_sec_mm(self, layer: nn.Module) -> 'SECA':
        """Copy the weights of a :class:`sec_mm.models.layers.SECAttention`."""
        self.qkv.load_state_dict(layer.qkv.state_dict())
        self.out_proj.load_state_dict(layer.proj.state_dict())
        if self.lce is not None:
            self.lce.load_state_dict(layer.lce.state_dict())
        return self
