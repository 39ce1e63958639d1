"""One SECViT block: conv position encoding, SEC attention and a conv FFN."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn.bricks import DropPath
from torch import Tensor

from sec_mm.ops import dispatch

from .conv_ffn import ConvFFN
from .memory_format import channels_last_conv_weights
from .norm import LayerNorm2d
from .sec_attention_2d import SECAttention


class SECViTBlock(nn.Module):
    """SECViT block on ``(B, C, H, W)`` maps::

        x = x + cpe(x)
        x = x + drop_path(gamma1 * attn(norm1(x)))
        x = x + drop_path(gamma2 * ffn(norm2(x)))

    Args:
        embed_dims (int): Channels ``C``.
        num_heads (int): Attention heads.
        mlp_ratio (float): FFN hidden channels over ``C``. Defaults to 3.
        num_clusters (int, optional): SEC clusters (``<= 1``: global attention).
        cluster_size (int, optional): Tokens per cluster instead of ``num_clusters``.
        drop_path_rate (float): Stochastic depth rate. Defaults to 0.
        layer_scale_init_value (float): Initial value of the per-channel layer scales
            ``gamma1``/``gamma2``; 0 disables them. Defaults to 0.
        use_rope (bool): 2-D RoPE in attention. Defaults to True.
        use_lce (bool): LCE in attention. Defaults to True.
        with_cp (bool): Trade compute for memory with gradient checkpointing.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 mlp_ratio: float = 3.,
                 num_clusters: Optional[int] = None,
                 cluster_size: Optional[int] = None,
                 drop_path_rate: float = 0.,
                 layer_scale_init_value: float = 0.,
                 use_rope: bool = True,
                 use_lce: bool = True,
                 with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.cpe = channels_last_conv_weights(
            nn.Conv2d(embed_dims, embed_dims, 3, padding=1, groups=embed_dims))
        self.norm1 = LayerNorm2d(embed_dims)
        self.attn = SECAttention(
            embed_dims, num_heads, num_clusters=num_clusters, cluster_size=cluster_size,
            use_rope=use_rope, use_lce=use_lce)
        self.norm2 = LayerNorm2d(embed_dims)
        self.ffn = ConvFFN(embed_dims, int(embed_dims * mlp_ratio))
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        if layer_scale_init_value > 0:
            self.gamma1 = nn.Parameter(
                torch.full((1, embed_dims, 1, 1), float(layer_scale_init_value)))
            self.gamma2 = nn.Parameter(
                torch.full((1, embed_dims, 1, 1), float(layer_scale_init_value)))
        else:
            self.gamma1 = self.gamma2 = None

    def _forward(self, x: Tensor, rope: Optional[Tuple[Tensor, Tensor]]) -> Tensor:
        x = dispatch.add_into_fresh(self.cpe(x), x)  # x + cpe(x), into the conv's fresh output
        attn = self.attn(self.norm1(x), rope)
        x = x + self.drop_path(attn if self.gamma1 is None else self.gamma1 * attn)
        ffn = self.ffn(self.norm2(x))
        return x + self.drop_path(ffn if self.gamma2 is None else self.gamma2 * ffn)

    def forward(self, x: Tensor, rope: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H, W)``; ``rope`` as in :class:`SECAttention`."""
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, rope, use_reentrant=False)
        return self._forward(x, rope)
