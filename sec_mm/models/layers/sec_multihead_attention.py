"""SEC attention on token sequences ``(B, N, C)``: the layout of mmpretrain's Swin and ViT."""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from mmpretrain.models.utils import MultiheadAttention
from torch import Tensor

from sec_mm.ops import (dispatch, inverse_permutation, permute_tokens, restore_tokens,
                        sec_attention, sec_cluster_sizes)
from .sec_attention_core import SECAttentionCore


class SECMultiheadAttention(SECAttentionCore, MultiheadAttention):
    """Multi-head Semantic Equitable Clustering attention on token sequences.

    mmpretrain's :class:`~mmpretrain.models.utils.MultiheadAttention` (same ``qkv``, ``proj``,
    ``gamma1`` layer scale and ``out_drop`` stochastic depth, so its checkpoints load) whose
    global attention is replaced by SEC attention (:func:`sec_mm.ops.sec_attention`): the image
    tokens of every (batch item, head) are sorted by the cosine similarity of their key to the
    mean key, cut into equal clusters, and attend inside their cluster.

    Extra tokens (a ViT's class token) stay global, in both directions: each extra token
    attends to every token, and every image token attends to its cluster *plus* all extra
    tokens. The extra tokens take no part in the sorting (the mean key is that of the image
    tokens), so clusters are the same as without them. With one cluster this is exactly
    mmpretrain's global attention.

    Optionally, as in the SECViT release, 2-D RoPE rotates the image tokens' queries and keys
    and LCE (a depthwise conv of the image tokens' values) is added to the attention output;
    both need ``hw_shape``.

    Args:
        embed_dims (int): Channels ``C``.
        num_heads (int): Attention heads; ``C`` must be divisible by it.
        num_clusters (int, optional): Clusters of image tokens per (image, head); ``<= 1``
            means global attention.
        cluster_size (int, optional): Image tokens per cluster instead, so the count becomes
            ``ceil(H * W / cluster_size)``. Exactly one of the two is given.
        num_extra_tokens (int): Leading tokens that are not image tokens (1 for a class
            token). Defaults to 0.
        use_rope (bool): 2-D RoPE on the image tokens' q and k. Defaults to False.
        use_lce (bool): Local context enhancement. Defaults to False.
        lce_kernel_size (int): Kernel of the LCE depthwise conv. Defaults to 5.
        qkv_bias (bool): Bias of the qkv projection. Defaults to True.
        qk_scale (float, optional): Logit scale; ``head_dims ** -0.5`` if None.
        proj_bias (bool): Bias of the output projection. Defaults to True.
        proj_drop (float): Dropout after the output projection. Defaults to 0.
        dropout_layer (dict): Applied to the output (stochastic depth). Defaults to no drop.
        layer_scale_init_value (float): Layer scale ``gamma1``; 0 disables it. Defaults to 0.
        init_cfg (dict, optional): Initialisation config.

    Shape:
        - x: ``(B, num_extra_tokens + H * W, C)``, image tokens in row-major ``(h, w)`` order.
        - output: same as ``x``.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 num_clusters: Optional[int] = None,
                 cluster_size: Optional[int] = None,
                 num_extra_tokens: int = 0,
                 use_rope: bool = False,
                 use_lce: bool = False,
                 lce_kernel_size: int = 5,
                 qkv_bias: bool = True,
                 qk_scale: Optional[float] = None,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.,
                 dropout_layer: dict = dict(type='Dropout', drop_prob=0.),
                 proj_bias: bool = True,
                 layer_scale_init_value: float = 0.,
                 init_cfg: Optional[dict] = None) -> None:
        self.check_sec_args(embed_dims, num_heads, num_clusters, cluster_size)
        if attn_drop:
            raise ValueError(
                f'SEC attention has no dropout on attention weights; got attn_drop={attn_drop}. '
                'Set the attention dropout (e.g. attn_drop_rate) to 0.')
        if num_extra_tokens < 0:
            raise ValueError(f'num_extra_tokens must be >= 0, got {num_extra_tokens}.')
        super().__init__(
            embed_dims,
            num_heads,
            proj_drop=proj_drop,
            dropout_layer=dropout_layer,
            qkv_bias=qkv_bias,
            proj_bias=proj_bias,
            layer_scale_init_value=layer_scale_init_value,
            init_cfg=init_cfg)
        self.init_sec_parts(embed_dims, num_heads, num_clusters, cluster_size, use_rope,
                            use_lce, lce_kernel_size)
        self.num_extra_tokens = num_extra_tokens
        self.scale = qk_scale or self.head_dims**-0.5

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, num_extra_tokens={self.num_extra_tokens}'

    def forward(self, x: Tensor, hw_shape: Optional[Sequence[int]] = None) -> Tensor:
        """Apply SEC attention.

        Args:
            x (Tensor): ``(B, N, C)`` tokens, the extra tokens first.
            hw_shape (tuple[int, int], optional): ``(H, W)`` of the image tokens. Needed for
                RoPE and LCE; checked against ``N`` when given.

        Returns:
            Tensor: ``(B, N, C)``.
        """
        if x.dim() != 3 or x.shape[-1] != self.embed_dims:
            raise ValueError(f'SECMultiheadAttention expects tokens of shape (B, N, '
                             f'{self.embed_dims}), got {tuple(x.shape)}.')
        batch, length, _ = x.shape
        extra = self.num_extra_tokens
        if hw_shape is not None and extra + hw_shape[0] * hw_shape[1] != length:
            raise ValueError(f'{length} tokens do not fit hw_shape {tuple(hw_shape)} plus '
                             f'{extra} extra tokens.')
        if hw_shape is None and (self.rope is not None or self.lce is not None):
            raise ValueError('RoPE and LCE need the image size: call with hw_shape=(H, W).')

        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, self.head_dims)
        # q, k head-major (B, heads, N, d), image tokens rotated; v token-major (B, N, heads, d).
        q, k, v = self.split_qkv(qkv, hw_shape, num_extra_tokens=extra)
        order = self.cluster_order(k, extra)
        # Attention in the activations' (autocast) dtype, clusters from the keys above.
        q, k, v = q.to(v.dtype), k.to(v.dtype), v.transpose(1, 2)

        out = self._attend(q, k, v, order)  # (B, heads, N, d)
        out = out.transpose(1, 2).reshape(batch, length, self.embed_dims)
        if self.lce is not None:
            lce = self.local_context(v[:, :, extra:].transpose(1, 2), hw_shape)
            lce = lce.flatten(2).transpose(1, 2)
            out = torch.cat([out[:, :extra], out[:, extra:] + lce], dim=1)

        out = self.proj(out)
        return self.out_drop(self.gamma1(self.proj_drop(out)))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, order: Optional[Tensor]) -> Tensor:
        """SEC attention of ``(B, heads, N, d)`` q, k, v with the extra tokens global.

        ``order`` is the ``(B, heads, N - extra)`` SEC order of the image tokens (None for one
        cluster).
        """
        extra = self.num_extra_tokens
        if order is None:
            # mmpretrain's own op, so that one cluster is bit-for-bit the stock model.
            return F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        count = self.clusters_for(int(q.shape[2]) - extra)  # an int also under jit.trace
        if extra == 0:
            return sec_attention(q, k, v, num_clusters=count, scale=self.scale, order=order)

        # The extra tokens' queries see everything.
        extra_out = dispatch.attention(q[:, :, :extra], k, v, scale=self.scale)
        inverse = inverse_permutation(order)
        image_q, image_k, image_v = (permute_tokens(t[:, :, extra:], order, inverse)
                                     for t in (q, k, v))
        image_out = self._clusters_with_extra_kv(image_q, image_k, image_v, k[:, :, :extra],
                                                 v[:, :, :extra], count)
        return torch.cat([extra_out, restore_tokens(image_out, order)], dim=2)

    def _clusters_with_extra_kv(self, q: Tensor, k: Tensor, v: Tensor, extra_k: Tensor,
                                extra_v: Tensor, count: int) -> Tensor:
        """Attention inside the clusters of sorted image tokens, each cluster also seeing the
        extra tokens' keys and values (prepended to every cluster).

        Clusters are folded into the head axis, so every call is a 4-D
        ``scaled_dot_product_attention`` (5-D inputs take the unfused math kernel on GPUs).
        """
        batch, heads, num_image = (int(n) for n in q.shape[:3])  # ints under jit.trace
        extra = extra_k.shape[2]
        sizes = sec_cluster_sizes(num_image, count)
        outs, start = [], 0
        # At most two cluster sizes (they differ by one): one batched call per size.
        for size in sorted(set(sizes), reverse=True):
            clusters = sizes.count(size)
            stop = start + clusters * size
            # Explicit sizes (no -1): an empty batch must reshape too.
            q_c, k_c, v_c = (t[:, :, start:stop].reshape(batch, heads * clusters, size,
                                                         t.shape[-1]) for t in (q, k, v))
            extra_k_c, extra_v_c = (
                t.unsqueeze(2).expand(-1, -1, clusters, -1, -1).reshape(
                    batch, heads * clusters, extra, t.shape[-1]) for t in (extra_k, extra_v))
            out = dispatch.attention(q_c, torch.cat([extra_k_c, k_c], dim=2),
                                        torch.cat([extra_v_c, v_c], dim=2), scale=self.scale)
            outs.append(out.reshape(batch, heads, clusters * size, out.shape[-1]))
            start = stop
        return torch.cat(outs, dim=2)
