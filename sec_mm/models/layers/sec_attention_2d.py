"""The SEC attention layer of the SECViT release, on ``(B, C, H, W)`` feature maps."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from sec_mm.ops import dispatch, sec_attention
from .memory_format import channels_last_conv_weights
from .sec_attention_core import SECAttentionCore


class SECAttention(SECAttentionCore, nn.Module):
    """Multi-head Semantic Equitable Clustering attention.

    ``qkv`` is a 1x1 conv; 2-D RoPE rotates queries and keys; tokens are clustered by the
    cosine similarity of their keys to the mean key and attend inside their cluster
    (:func:`sec_mm.ops.sec_attention`); the local context enhancement (LCE, a depthwise conv on
    the values) is added before the output 1x1 conv.

    Args:
        embed_dims (int): Channels ``C``.
        num_heads (int): Attention heads; ``C`` must be divisible by it.
        num_clusters (int, optional): Clusters per (image, head). ``<= 1`` (the release
            writes -1) means global attention.
        cluster_size (int, optional): Tokens per cluster instead of a fixed count: the count
            becomes ``ceil(H * W / cluster_size)``, so the cost is linear in the image area.
            Exactly one of ``num_clusters`` and ``cluster_size`` is given.
        use_rope (bool): Rotate q and k with 2-D RoPE. Defaults to True.
        use_lce (bool): Add the LCE depthwise conv of the values. Defaults to True.
        lce_kernel_size (int): Kernel of the LCE conv. Defaults to 5.
        qkv_bias (bool): Bias of the qkv conv. Defaults to True.

    Shape:
        - x: ``(B, C, H, W)``
        - output: ``(B, C, H, W)``
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 num_clusters: Optional[int] = None,
                 cluster_size: Optional[int] = None,
                 use_rope: bool = True,
                 use_lce: bool = True,
                 lce_kernel_size: int = 5,
                 qkv_bias: bool = True) -> None:
        super().__init__()
        self.check_sec_args(embed_dims, num_heads, num_clusters, cluster_size)
        # Built in the release's order, so the state dict lists its keys in that order.
        self.qkv = nn.Conv2d(embed_dims, embed_dims * 3, 1, bias=qkv_bias)
        self.init_sec_parts(embed_dims, num_heads, num_clusters, cluster_size, use_rope,
                            use_lce, lce_kernel_size)
        self.proj = nn.Conv2d(embed_dims, embed_dims, 1)
        channels_last_conv_weights(self)  # it computes channels-last

    def forward(self, x: Tensor, rope: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
        """Apply SEC attention.

        Args:
            x (Tensor): ``(B, C, H, W)``.
            rope (tuple[Tensor, Tensor], optional): Precomputed ``(sin, cos)`` of shape
                ``(H * W, head_dims)`` from :class:`RotaryEmbedding2d`, so that one stage
                computes them once for all its blocks. Computed here when omitted.

        Returns:
            Tensor: ``(B, C, H, W)``.
        """
        if x.dim() != 4 or x.shape[1] != self.embed_dims:
            raise ValueError(
                f'SECAttention expects a (B, {self.embed_dims}, H, W) feature map, got shape '
                f'{tuple(x.shape)}.')
        batch, channels, height, width = x.shape
        # Channels-last: the 1x1 convs become plain matrix products over tokens, depthwise
        # convs run faster, and tokens are (B, L, C) in memory without a copy.
        x = x.contiguous(memory_format=torch.channels_last)
        # Channels split as (3, heads, head_dims); tokens in row-major (h, w) order. A view
        # of the channels-last qkv map: (B, L, 3, heads, head_dims).
        qkv = self.qkv(x).permute(0, 2, 3, 1).reshape(batch, height * width, 3,
                                                      self.num_heads, self.head_dims)
        # q, k head-major (B, heads, L, d); v token-major (B, L, heads, d).
        q, k, v = self.split_qkv(qkv, (height, width), rope)
        order = self.cluster_order(k)
        # Attention in the activations' (autocast) dtype, clusters from the keys above.
        q, k = q.to(v.dtype), k.to(v.dtype)

        out = sec_attention(q, k, v.transpose(1, 2), self.num_clusters, self.cluster_size,
                            order=order)
        # (B, heads, L, d) -> (B, C, H, W) in channels-last memory (no copy when `out` is
        # token-major, as sec_attention returns it).
        out = out.transpose(1, 2).reshape(batch, height, width, channels).permute(0, 3, 1, 2)
        if self.lce is not None:
            # In place into the conv's fresh output: one large allocation fewer.
            out = dispatch.add_into_fresh(self.local_context(v, (height, width)), out)
        return self.proj(out)
