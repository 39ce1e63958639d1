"""What the SEC attention layers share: cluster setting, RoPE, token order and LCE."""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from sec_mm.ops import dispatch, resolve_num_clusters, sec_order
from .depthwise_conv import DepthwiseConv2d
from .rope import RotaryEmbedding2d

__all__ = ['SECAttentionCore']


class SECAttentionCore:
    """Mixin of the SEC attention layers, so that they compute their shared parts one way.

    :class:`~sec_mm.models.layers.SECAttention` (feature maps) and
    :class:`~sec_mm.models.layers.SECMultiheadAttention` (token sequences, optionally with
    extra tokens such as a class token) differ in their input layout and in how extra tokens
    attend; everything else lives here:

    - the cluster setting, checked when the layer is built;
    - 2-D RoPE on the image tokens' queries and keys with float32 tables, so half-precision
      q and k are promoted to float32 as in the release (``q * cos``);
    - the token order (:func:`sec_mm.ops.sec_order` of the rotated keys), passed through the
      parameter-free ``order_probe`` so that forward hooks can read the clusters;
    - the local context enhancement (LCE): a depthwise conv of the image tokens' values.

    A subclass calls :meth:`check_sec_args` before building its projections and
    :meth:`init_sec_parts` after ``nn.Module.__init__``.
    """

    @staticmethod
    def check_sec_args(embed_dims: int, num_heads: int, num_clusters: Optional[int],
                       cluster_size: Optional[int]) -> None:
        """Fail at build time, not at the first forward, on a bad head or cluster setting."""
        if embed_dims % num_heads != 0:
            raise ValueError(
                f'embed_dims ({embed_dims}) must be divisible by num_heads ({num_heads}).')
        resolve_num_clusters(1, num_clusters, cluster_size)

    def init_sec_parts(self, embed_dims: int, num_heads: int, num_clusters: Optional[int],
                       cluster_size: Optional[int], use_rope: bool, use_lce: bool,
                       lce_kernel_size: int) -> None:
        """Set the cluster setting and build RoPE, LCE and the order probe.

        Args:
            embed_dims (int): Channels ``C``.
            num_heads (int): Attention heads.
            num_clusters (int, optional): Clusters per (image, head); ``<= 1`` means global
                attention.
            cluster_size (int, optional): Tokens per cluster instead. Exactly one is given.
            use_rope (bool): Rotate the image tokens' q and k with 2-D RoPE.
            use_lce (bool): Add the LCE depthwise conv of the image tokens' values.
            lce_kernel_size (int): Kernel of the LCE conv.
        """
        self.check_sec_args(embed_dims, num_heads, num_clusters, cluster_size)
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.num_clusters = num_clusters
        self.cluster_size = cluster_size
        self.rope = RotaryEmbedding2d(self.head_dims) if use_rope else None
        self.lce = DepthwiseConv2d(embed_dims, lce_kernel_size) if use_lce else None
        # An identity the (B, heads, L_image) token order passes through whenever there is
        # more than one cluster: forward hooks read the clusters without touching the state
        # dict.
        self.order_probe = nn.Identity()

    def clusters_for(self, num_image_tokens: int) -> int:
        """Clusters this layer cuts ``num_image_tokens`` tokens into (1: global attention)."""
        return resolve_num_clusters(num_image_tokens, self.num_clusters, self.cluster_size)

    def split_qkv(self,
                  qkv: Tensor,
                  hw_shape: Optional[Sequence[int]] = None,
                  rope: Optional[Tuple[Tensor, Tensor]] = None,
                  num_extra_tokens: int = 0) -> Tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values of a token-major qkv projection, RoPE applied.

        Args:
            qkv (Tensor): ``(B, N, 3, heads, d)``: the extra tokens first, then the image
                tokens in row-major ``(h, w)`` order.
            hw_shape (tuple[int, int], optional): ``(H, W)`` of the image tokens; needed for
                RoPE unless ``rope`` is given.
            rope (tuple[Tensor, Tensor], optional): Precomputed ``(sin, cos)``, each
                ``(H * W, d)``, from :class:`RotaryEmbedding2d`.
            num_extra_tokens (int): Leading tokens that RoPE leaves unrotated.

        Returns:
            tuple[Tensor, Tensor, Tensor]: ``q`` and ``k`` as ``(B, heads, N, d)`` (float32
            when RoPE promotes half-precision inputs), ``v`` token-major ``(B, N, heads, d)``.
        """
        if self.rope is None:
            q, k, v = qkv.unbind(2)
            return q.transpose(1, 2), k.transpose(1, 2), v
        sin, cos = rope if rope is not None else self.rope(*hw_shape)
        extra = num_extra_tokens
        if extra == 0:
            return dispatch.split_qkv_with_rope(qkv, sin, cos)
        image_q, image_k, _ = dispatch.split_qkv_with_rope(qkv[:, extra:], sin, cos)
        q, k, v = qkv[:, :extra].unbind(2)
        q, k = (torch.cat([t.transpose(1, 2).to(image.dtype), image], dim=2)
                for t, image in ((q, image_q), (k, image_k)))
        return q, k, qkv[:, :, 2]

    def cluster_order(self, k: Tensor, num_extra_tokens: int = 0) -> Optional[Tensor]:
        """SEC order of the image tokens, or None when they form one cluster.

        Args:
            k (Tensor): ``(B, heads, N, d)`` keys as RoPE leaves them (float32 under
                autocast, so mixed precision clusters as float32 training does).
            num_extra_tokens (int): Leading tokens that take no part in the sorting.

        Returns:
            Tensor, optional: ``(B, heads, N - num_extra_tokens)`` int64 token order.
        """
        if self.clusters_for(int(k.shape[2]) - num_extra_tokens) == 1:
            return None
        return self.order_probe(sec_order(k[:, :, num_extra_tokens:]))

    def local_context(self, image_v: Tensor, hw_shape: Sequence[int]) -> Tensor:
        """LCE of the image tokens' values.

        Args:
            image_v (Tensor): ``(B, H * W, heads, d)`` values, tokens in row-major order.
            hw_shape (tuple[int, int]): ``(H, W)``.

        Returns:
            Tensor: ``(B, C, H, W)``, channels in ``(heads, d)`` order.
        """
        batch = image_v.shape[0]
        return self.lce(image_v.reshape(batch, *hw_shape, self.embed_dims).permute(0, 3, 1, 2))

    def extra_repr(self) -> str:
        mode = (f'num_clusters={self.num_clusters}' if self.cluster_size is None else
                f'cluster_size={self.cluster_size}')
        return f'embed_dims={self.embed_dims}, num_heads={self.num_heads}, {mode}'
