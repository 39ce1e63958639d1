"""SEC-Swin: mmpretrain's Swin Transformer with SEC attention in place of window attention."""
from typing import Dict, List, Sequence, Union

from mmengine.logging import print_log
from mmpretrain.models.backbones import SwinTransformer
from torch import Tensor

from sec_mm.models.layers import SECMultiheadAttention
from sec_mm.models.utils import (StrictPretrainedMixin, check_out_indices,
                                 expand_cluster_setting)
from sec_mm.checkpoint import CheckpointMismatchError, require_fitting_state_dict

# Parameters and buffers of window attention that SEC attention has no counterpart for.
WINDOW_ONLY_KEYS = ('relative_position_bias_table', 'relative_position_index', 'attn_mask')


class SECSwinTransformer(StrictPretrainedMixin, SwinTransformer):
    """Swin Transformer whose (shifted) window attention is SEC attention, from `Semantic
    Equitable Clustering: A Simple, Fast and Effective Strategy for Vision Transformer
    <https://arxiv.org/abs/2405.13337>`_ ("SEC-Swin").

    mmpretrain's :class:`~mmpretrain.models.backbones.SwinTransformer` unchanged (patch
    embedding, patch merging, norms, FFNs, stochastic depth, ``arch`` names ``t``/``s``/``b``/
    ``l``, ``out_indices``, ``frozen_stages``, ``norm_eval``, ``with_cp``) except that every
    block's ``ShiftWindowMSA`` is replaced by :class:`SECMultiheadAttention`: tokens are
    clustered by the cosine similarity of their keys to the mean key, ``[32, 8, 2, global]``
    clusters per stage by default. As in the released SEC attention layer, 2-D RoPE and LCE are
    on by default; they stand in for the relative position bias that goes away with the windows.

    Swin checkpoints load into it (``init_cfg=dict(type='Pretrained', checkpoint=...,
    prefix='backbone.')`` or ``load_from``): mmpretrain classifiers, mmdet / mmseg models with a
    Swin backbone and the original Microsoft release files (converted with mmdet's
    ``swin_converter`` when mmdet is installed). Window-only keys (relative position tables and
    indices, attention masks) are skipped and listed in one log line; LCE and output norms the
    checkpoint lacks are newly initialised and listed; anything else that does not fit raises,
    whoever loads the weights (``init_cfg``, ``load_from``, ``--resume``, the test tool, the
    inferencers).

    Args:
        arch (str | dict): As mmpretrain's Swin: ``'t'``, ``'s'``, ``'b'``, ``'l'`` (or
            ``'tiny'``, ...) or a dict with ``embed_dims``, ``depths``, ``num_heads``.
            Defaults to ``'tiny'``.
        num_clusters (int | Sequence[int], optional): SEC clusters per stage; ``<= 1`` means
            global attention. Defaults to ``(32, 8, 2, -1)`` (the papers) unless
            ``cluster_size`` is given.
        cluster_size (int | Sequence[int], optional): Tokens per cluster per stage instead, so
            the attention cost grows linearly with the image area (98 matches the papers'
            clusters at 224x224). Not together with ``num_clusters``.
        use_rope (bool): 2-D RoPE on queries and keys. Defaults to True.
        use_lce (bool): Local context enhancement (5x5 depthwise conv of the values).
            Defaults to True.
        **kwargs: Every other argument of mmpretrain's ``SwinTransformer`` (``img_size``,
            ``patch_size``, ``in_channels``, ``drop_path_rate``, ``out_indices``,
            ``out_after_downsample``, ``use_abs_pos_embed``, ``with_cp``, ``frozen_stages``,
            ``norm_eval``, ``norm_cfg``, ``stage_cfgs``, ``patch_cfg``, ``init_cfg``), except
            the window ones (``window_size``, ``pad_small_map``): there are no windows.

    Shape:
        - input: ``(B, in_channels, H, W)``, any ``H, W``.
        - output: a tuple of ``(B, C_i, ceil(H / 2^(i+2)), ceil(W / 2^(i+2)))`` for ``i`` in
          ``out_indices``.

    Examples:
        >>> import torch
        >>> from sec_mm.models import SECSwinTransformer
        >>> model = SECSwinTransformer(arch='t', out_indices=(0, 1, 2, 3)).eval()
        >>> [tuple(f.shape) for f in model(torch.rand(1, 3, 224, 224))]
        [(1, 96, 56, 56), (1, 192, 28, 28), (1, 384, 14, 14), (1, 768, 7, 7)]
    """
    default_num_clusters = (32, 8, 2, -1)

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 num_clusters: Union[int, Sequence[int], None] = None,
                 cluster_size: Union[int, Sequence[int], None] = None,
                 use_rope: bool = True,
                 use_lce: bool = True,
                 **kwargs) -> None:
        windowed = sorted({'window_size', 'pad_small_map'} & set(kwargs))
        if windowed:
            raise ValueError(f'SECSwinTransformer has no attention windows; remove {windowed} '
                             'from its config.')
        if 'out_indices' in kwargs:  # the range is mmpretrain's to check
            check_out_indices('SECSwinTransformer', kwargs['out_indices'])
        super().__init__(arch=arch, **kwargs)
        clusters = self._per_stage(num_clusters, cluster_size)
        for stage, cluster_cfg in zip(self.stages, clusters):
            for block in stage.blocks:
                window_attn = block.attn
                w_msa = window_attn.w_msa
                block.attn = SECMultiheadAttention(
                    w_msa.embed_dims,
                    w_msa.num_heads,
                    use_rope=use_rope,
                    use_lce=use_lce,
                    qkv_bias=w_msa.qkv.bias is not None,
                    qk_scale=w_msa.scale,
                    attn_drop=w_msa.attn_drop.p,
                    proj_drop=w_msa.proj_drop.p,
                    **cluster_cfg)
                # Keep the block's stochastic depth module: only the attention changes.
                block.attn.out_drop = window_attn.drop
        # Stock Swin checkpoints: rename and drop window-attention keys whenever a state dict
        # is loaded (mmengine's load_checkpoint / load_from as well as init_cfg).
        self._register_load_state_dict_pre_hook(self._adapt_window_attention_keys)
        # Then anything that still does not fit raises, whoever loads.
        require_fitting_state_dict(self, self.new_parts())

    def _per_stage(self, num_clusters, cluster_size) -> List[Dict[str, int]]:
        return expand_cluster_setting('SECSwinTransformer', num_clusters, cluster_size,
                                      self.default_num_clusters, self.num_layers, 'stage')

    def _adapt_window_attention_keys(self, state_dict: Dict[str, Tensor], prefix: str,
                                     *args, **kwargs) -> None:
        """Map a Swin state dict onto this model in place: ``attn.w_msa.{qkv,proj}`` ->
        ``attn.{qkv,proj}``, the old single final ``norm`` -> ``norm{last}``, and drop the
        window-only keys, listing them in one log line."""
        skipped = []
        for key in list(state_dict):
            if not key.startswith(prefix):
                continue
            name = key[len(prefix):]
            if name.startswith('stages.') and name.rsplit('.', 1)[-1] in WINDOW_ONLY_KEYS:
                del state_dict[key]
                skipped.append(name)
            elif name.startswith('stages.') and '.attn.w_msa.' in name:
                state_dict[key.replace('.attn.w_msa.', '.attn.')] = state_dict.pop(key)
            elif name.startswith('norm.'):  # mmcls 0.x and the original release
                state_dict[f'{prefix}norm{self.num_layers - 1}.{name[5:]}'] = state_dict.pop(key)
        if skipped:
            print_log(f'{type(self).__name__}: skipped {len(skipped)} window-attention keys '
                      f'of the checkpoint that SEC attention does not use: {", ".join(skipped)}',
                      logger='current')

    def adapt_checkpoint(self, state: Dict[str, Tensor]) -> Dict[str, Tensor]:
        if 'patch_embed.proj.weight' in state and any(k.startswith('layers.') for k in state):
            state = _convert_original_swin(state)
        state = dict(state)
        self._adapt_window_attention_keys(state, '')
        if self.use_abs_pos_embed:
            self._prepare_abs_pos_embed(state, '')
        return state

    def new_parts(self) -> List[str]:
        # What a stock Swin checkpoint lacks: LCE, and output norms of other out_indices.
        return [k for k in self.state_dict() if '.attn.lce.' in k or k.startswith('norm')]


def _convert_original_swin(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Microsoft's released Swin layout -> mmpretrain's, with mmdet's converter."""
    try:
        from mmdet.models.backbones.swin import swin_converter
    except ImportError as error:
        raise CheckpointMismatchError(
            'This is an original (Microsoft release) Swin checkpoint; converting it needs '
            'mmdet, or convert it first with mmpretrain\'s '
            'tools/model_converters/swin_to_mmpretrain.py.') from error
    prefix = 'backbone.'
    return {k[len(prefix):]: v for k, v in swin_converter(state).items()}
