"""SEC-DeiT: mmpretrain's Vision Transformer (DeiT archs) with SEC attention."""
from typing import Dict, List, Sequence, Tuple, Union

from mmpretrain.models.backbones import VisionTransformer
from torch import Tensor

from sec_mm.models.layers import SECMultiheadAttention
from sec_mm.models.utils import (StrictPretrainedMixin, check_out_indices,
                                 expand_cluster_setting)
from sec_mm.checkpoint import require_fitting_state_dict


class SECVisionTransformer(StrictPretrainedMixin, VisionTransformer):
    """Vision Transformer whose global attention is SEC attention ("SEC-DeiT"), from `Semantic
    Equitable Clustering: A Simple and Effective Strategy for Clustering Vision Tokens`
    (ICCV 2025).

    mmpretrain's :class:`~mmpretrain.models.backbones.VisionTransformer` unchanged (patch
    embedding, position embedding, class token, pre-norm encoder layers, FFNs, layer scale,
    stochastic depth, ``out_type``, ``frozen_stages``; archs ``deit-tiny``, ``deit-small``,
    ``deit-base`` and the others of its ``arch_zoo``) except that every layer's
    ``MultiheadAttention`` is :class:`SECMultiheadAttention` with the same ``qkv``/``proj``
    weights: the patch tokens are sorted by the cosine similarity of their keys to the mean
    patch key and cut into ``num_clusters`` equal clusters, each attending inside its cluster.

    The class token stays global in both directions: it attends to every token, and every
    patch token attends to its cluster plus the class token. It is left out of the clustering
    (it is not an image region, and SEC's mean key plays the role of a class token already), and
    it keeps DeiT's classification path intact. Implemented by prepending the class token's key
    and value to every cluster, one batched attention call per cluster size. With
    ``num_clusters=1`` the model computes exactly mmpretrain's ViT.

    For detection and segmentation use ``out_type='featmap'``: the output is the stride-16
    patch map, which a simple pyramid neck (mmseg's ``MultiLevelNeck``) turns into 4 scales.

    Pretrained mmpretrain ViT/DeiT checkpoints load with every key
    (``init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.')``); keys that do
    not fit raise, whoever loads the weights (``load_from``, ``--resume``, the test tool, the
    inferencers). The position embedding is resized to ``img_size`` as in mmpretrain.

    Args:
        arch (str | dict): An mmpretrain ViT arch. Defaults to ``'deit-small'``.
        num_clusters (int | Sequence[int], optional): SEC clusters of the patch tokens, one
            value for all layers or one per layer; ``<= 1`` means global attention. The papers
            use 2, 4 or 8. Defaults to 4 unless ``cluster_size`` is given.
        cluster_size (int | Sequence[int], optional): Patch tokens per cluster instead, so the
            attention cost grows linearly with the image area (49 is 4 clusters at 224x224).
            Not together with ``num_clusters``.
        **kwargs: Every other argument of mmpretrain's ``VisionTransformer`` (``img_size``,
            ``patch_size``, ``out_indices``, ``drop_path_rate``, ``out_type``,
            ``with_cls_token``, ``final_norm``, ``frozen_stages``, ``layer_scale_init_value``,
            ``layer_cfgs``, ``init_cfg``, ...). The attention-weight dropout
            (``attn_drop_rate`` in ``layer_cfgs``) must stay 0.

    Shape:
        - input: ``(B, in_channels, H, W)``, any ``H, W``.
        - output: per ``out_indices``, as mmpretrain's ViT: ``(B, C)`` (``cls_token``,
          ``avg_featmap``), ``(B, C, ceil(H / 16), ceil(W / 16))`` (``featmap``) or
          ``(B, 1 + H * W / 256, C)`` (``raw``).

    Examples:
        >>> import torch
        >>> from sec_mm.models import SECVisionTransformer
        >>> model = SECVisionTransformer('deit-small', out_type='featmap').eval()
        >>> tuple(model(torch.rand(1, 3, 224, 224))[0].shape)
        (1, 384, 14, 14)
    """
    default_num_clusters = 4

    def __init__(self,
                 arch: Union[str, dict] = 'deit-small',
                 num_clusters: Union[int, Sequence[int], None] = None,
                 cluster_size: Union[int, Sequence[int], None] = None,
                 **kwargs) -> None:
        if 'out_indices' in kwargs:  # the range is mmpretrain's to check
            check_out_indices('SECVisionTransformer', kwargs['out_indices'])
        super().__init__(arch=arch, **kwargs)
        for layer, cluster_cfg in zip(self.layers, self._per_layer(num_clusters, cluster_size)):
            global_attn = layer.attn
            layer.attn = SECMultiheadAttention(
                global_attn.embed_dims,
                global_attn.num_heads,
                num_extra_tokens=self.num_extra_tokens,
                qkv_bias=global_attn.qkv.bias is not None,
                proj_bias=global_attn.proj.bias is not None,
                attn_drop=global_attn.attn_drop,
                proj_drop=global_attn.proj_drop.p,
                **cluster_cfg)
            # Keep the layer's layer scale and stochastic depth: only the attention changes.
            layer.attn.gamma1 = global_attn.gamma1
            layer.attn.out_drop = global_attn.out_drop
        if self.frozen_stages > 0:
            # The parent froze its layers before their attention was replaced.
            self._freeze_stages()
        # After the parent's position-embedding resize: whoever loads, the weights must fit.
        require_fitting_state_dict(self, self.new_parts())

    def _per_layer(self, num_clusters, cluster_size) -> List[Dict[str, int]]:
        return expand_cluster_setting('SECVisionTransformer', num_clusters, cluster_size,
                                      self.default_num_clusters, self.num_layers, 'layer')

    def new_parts(self) -> Sequence[str]:
        # The average-pooling norm exists only for out_type='avg_featmap'.
        return ('ln2.', )

    def adapt_checkpoint(self, state: Dict[str, Tensor]) -> Dict[str, Tensor]:
        state = dict(state)
        self._prepare_pos_embed(state, '')  # resize to this img_size, as mmpretrain does
        return state

    def _format_output(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        if self.out_type == 'featmap' and x.shape[0] == 0:
            # mmpretrain reshapes to (B, H, W, -1), which is ambiguous for B = 0.
            return x[:, self.num_extra_tokens:].reshape(0, *hw, x.shape[-1]).permute(0, 3, 1, 2)
        return super()._format_output(x, hw)
