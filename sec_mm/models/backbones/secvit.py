"""SECViT: a hierarchical vision transformer built on Semantic Equitable Clustering."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import contextlib
import warnings

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule, build_norm_layer
from mmengine.model import BaseModule
from torch import Tensor

from sec_mm.models.layers import SECViTBlock
from sec_mm.models.layers.memory_format import channels_last_conv_weights
from sec_mm.checkpoint import require_fitting_state_dict
from sec_mm.models.utils import (FrozenStagesMixin, StrictPretrainedMixin, check_bool, check_int,
                                 check_out_indices, check_positive_number, check_probability,
                                 expand_cluster_setting, is_int)


@contextlib.contextmanager
def _conv_bias_before_norm():
    """Silence mmcv's warning about conv biases before BN: the release has them."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Unnecessary conv bias before')
        yield


class SECViTStage(nn.Module):
    """SECViT blocks at one resolution, then an optional stride-2 downsample.

    The stage's 2-D RoPE tables are computed once and shared by all its blocks.

    Args:
        embed_dims (int): Channels of the stage.
        depth (int): Number of blocks.
        num_heads (int): Attention heads.
        out_channels (int, optional): Channels after the downsample; ``None`` for the last
            stage, which has no downsample.
        drop_path_rates (Sequence[float]): Stochastic depth rate of every block.
        norm_cfg (dict): Norm of the downsample conv.
        block_cfg (dict): Further :class:`SECViTBlock` arguments.
    """

    def __init__(self,
                 embed_dims: int,
                 depth: int,
                 num_heads: int,
                 out_channels: Optional[int],
                 drop_path_rates: Sequence[float],
                 norm_cfg: dict,
                 **block_cfg) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([
            SECViTBlock(embed_dims, num_heads, drop_path_rate=drop_path_rates[i], **block_cfg)
            for i in range(depth)
        ])
        self.downsample = None
        if out_channels is not None:
            with _conv_bias_before_norm():
                self.downsample = ConvModule(
                    embed_dims, out_channels, 3, stride=2, padding=1, bias=True,
                    norm_cfg=norm_cfg, act_cfg=None)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Return the blocks' output ``(B, C, H, W)`` and the next stage's input."""
        attn = self.blocks[0].attn
        rope = attn.rope(*x.shape[-2:]) if attn.rope is not None else None
        for block in self.blocks:
            x = block(x, rope)
        return x, (x if self.downsample is None else self.downsample(x))


class SECViT(StrictPretrainedMixin, FrozenStagesMixin, BaseModule):
    """SECViT backbone from `Semantic Equitable Clustering: A Simple, Fast and Effective
    Strategy for Vision Transformer <https://arxiv.org/abs/2405.13337>`_.

    A four-stage convolutional-stem transformer whose attention clusters tokens by the cosine
    similarity of their keys to the mean key (Semantic Equitable Clustering). Released
    variants ``t``, ``s``, ``b``, ``l`` and the ICCV'25 variants ``s-iccv``, ``b-iccv``,
    ``l-iccv``, ``xl-iccv``.

    Args:
        arch (str | dict): A key of ``arch_zoo`` or a dict with ``embed_dims``, ``depths``,
            ``num_heads`` (4 entries each) and optionally ``mlp_ratios`` (default 3) and
            ``layer_scales`` (booleans, default all False). Defaults to ``'t'``.
        in_channels (int): Input image channels. Defaults to 3.
        num_clusters (int | Sequence[int], optional): SEC clusters per stage; ``<= 1`` means
            global attention. Defaults to ``(32, 8, 2, -1)`` (the papers) unless
            ``cluster_size`` is given.
        cluster_size (int | Sequence[int], optional): Tokens per cluster per stage instead of
            a fixed count, so attention cost grows linearly with the image area. 98 matches
            the papers' clusters at 224x224. Not together with ``num_clusters``.
        mlp_ratio (float, optional): Overrides the arch's FFN ratio in every stage.
        drop_path_rate (float): Stochastic depth, linear from 0 over all blocks. Defaults to
            0.1.
        layer_scale_init_value (float): Initial layer scale (a positive finite number) in the
            stages the arch enables it for; the arch's ``layer_scales`` turn it on or off.
            Defaults to 1e-6.
        use_rope (bool): 2-D RoPE in attention. Defaults to True.
        use_lce (bool): Local context enhancement in attention. Defaults to True.
        out_indices (Sequence[int]): Stages whose outputs are returned (strides 4, 8, 16,
            32; taken after the blocks, before the downsample); negative ones count from the
            end, as Python's (-1 is the last stage, stored as 3). Defaults to ``(3, )``.
        frozen_stages (int): -1 trains everything; 0 freezes the stem; ``k`` freezes the stem
            and the first ``k`` stages (with their downsamples). Defaults to -1.
        norm_eval (bool): Keep BatchNorm layers in eval mode while training. Defaults to False.
        with_cp (bool): Gradient checkpointing of every block. Defaults to False.
        norm_cfg (dict): Norm of the stem and downsample convs. Defaults to ``dict(type='BN')``.
        out_norm_cfg (dict, optional): Norm added to every returned feature map, as dense
            prediction necks expect (e.g. ``dict(type='LN2d', eps=1e-6)``); ``None`` (the
            classification setting) adds none. Defaults to None.
        init_cfg (dict | list[dict], optional): Initialisation. ``dict(type='Pretrained',
            checkpoint=..., prefix='backbone.')`` loads a converted checkpoint and raises on
            keys that do not fit. So does every other load of weights into the backbone
            (``load_from``, ``--resume``, the test tool, the inferencers); only the output
            norms may be missing.

    Shape:
        - input: ``(B, in_channels, H, W)``, any ``H, W``.
        - output: a tuple of ``(B, C_i, ceil(H / 2^(i+2)), ceil(W / 2^(i+2)))`` for ``i`` in
          ``out_indices`` (exact for sizes divisible by 32).

    Examples:
        >>> import torch
        >>> from sec_mm.models import SECViT
        >>> model = SECViT(arch='t', out_indices=(0, 1, 2, 3)).eval()
        >>> [tuple(f.shape) for f in model(torch.rand(1, 3, 224, 224))]
        [(1, 64, 56, 56), (1, 128, 28, 28), (1, 256, 14, 14), (1, 512, 7, 7)]
    """
    arch_zoo: Dict[str, dict] = {
        **dict.fromkeys(['t', 'tiny'], {
            'embed_dims': [64, 128, 256, 512], 'depths': [2, 2, 9, 2],
            'num_heads': [2, 4, 8, 16], 'layer_scales': [False, False, False, False]}),
        **dict.fromkeys(['s', 'small'], {
            'embed_dims': [64, 128, 256, 512], 'depths': [3, 4, 18, 4],
            'num_heads': [2, 4, 8, 16], 'layer_scales': [False, False, False, False]}),
        **dict.fromkeys(['b', 'base'], {
            'embed_dims': [80, 160, 320, 512], 'depths': [4, 8, 26, 8],
            'num_heads': [5, 5, 10, 16], 'layer_scales': [False, False, True, True]}),
        **dict.fromkeys(['l', 'large'], {
            'embed_dims': [112, 224, 448, 640], 'depths': [4, 8, 26, 8],
            'num_heads': [7, 7, 14, 20], 'layer_scales': [False, False, True, True]}),
        # ICCV'25 paper table; no weights were released. Heads of S and the layer scales are
        # not stated there: they follow the released models of the same width.
        's-iccv': {
            'embed_dims': [64, 128, 256, 512], 'depths': [4, 4, 18, 4],
            'num_heads': [2, 4, 8, 16], 'layer_scales': [False, False, False, False]},
        'b-iccv': {
            'embed_dims': [80, 160, 320, 512], 'depths': [4, 8, 26, 9],
            'num_heads': [2, 4, 8, 16], 'layer_scales': [False, False, True, True]},
        'l-iccv': {
            'embed_dims': [112, 224, 448, 640], 'depths': [4, 8, 26, 9],
            'num_heads': [4, 8, 14, 20], 'layer_scales': [False, False, True, True]},
        'xl-iccv': {
            'embed_dims': [128, 256, 512, 1024], 'depths': [6, 12, 28, 12],
            'num_heads': [4, 8, 16, 32], 'layer_scales': [False, False, True, True]},
    }
    default_num_clusters = (32, 8, 2, -1)
    num_stages = 4

    def __init__(self,
                 arch: Union[str, dict] = 't',
                 in_channels: int = 3,
                 num_clusters: Union[int, Sequence[int], None] = None,
                 cluster_size: Union[int, Sequence[int], None] = None,
                 mlp_ratio: Optional[float] = None,
                 drop_path_rate: float = 0.1,
                 layer_scale_init_value: float = 1e-6,
                 use_rope: bool = True,
                 use_lce: bool = True,
                 out_indices: Sequence[int] = (3, ),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 norm_cfg: dict = dict(type='BN'),
                 out_norm_cfg: Optional[dict] = None,
                 init_cfg: Union[dict, List[dict], None] = None) -> None:
        self.default_init_cfg = [
            dict(type='TruncNormal', layer='Conv2d', std=.02, bias=0.),
            dict(type='Constant', layer=['LayerNorm', '_BatchNorm'], val=1., bias=0.)
        ]
        super().__init__(init_cfg=init_cfg if init_cfg is not None else self.default_init_cfg)
        self.arch_settings = self._parse_arch(arch)
        embed_dims = self.arch_settings['embed_dims']
        depths = self.arch_settings['depths']
        check_int('SECViT', 'in_channels', in_channels, 1)
        check_int('SECViT', 'frozen_stages', frozen_stages, -1, self.num_stages,
                  '-1: none, 0: the stem, k: the stem and k stages')
        if mlp_ratio is not None:
            check_positive_number('SECViT', 'mlp_ratio', mlp_ratio)
        check_probability('SECViT', 'drop_path_rate', drop_path_rate)
        check_positive_number('SECViT', 'layer_scale_init_value', layer_scale_init_value)
        for name, flag in (('use_rope', use_rope), ('use_lce', use_lce),
                           ('norm_eval', norm_eval), ('with_cp', with_cp)):
            check_bool('SECViT', name, flag)
        self.embed_dims = embed_dims
        self.in_channels = in_channels
        self.out_indices = check_out_indices('SECViT', out_indices, self.num_stages)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        clusters = self._per_stage(num_clusters, cluster_size)

        # Conv stem, stride 4: two stride-2 convs around two stride-1 convs.
        half = embed_dims[0] // 2
        conv = dict(kernel_size=3, padding=1, bias=True, norm_cfg=norm_cfg)
        gelu = dict(type='GELU')
        with _conv_bias_before_norm():
            self.patch_embed = nn.Sequential(
                ConvModule(in_channels, half, stride=2, act_cfg=gelu, **conv),
                ConvModule(half, half, stride=1, act_cfg=gelu, **conv),
                ConvModule(half, half, stride=1, act_cfg=gelu, **conv),
                ConvModule(half, embed_dims[0], stride=2, act_cfg=None, **conv))

        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.stages = nn.ModuleList()
        for i in range(self.num_stages):
            first = sum(depths[:i])
            ratio = mlp_ratio if mlp_ratio is not None else self.arch_settings['mlp_ratios'][i]
            if int(embed_dims[i] * ratio) < 1:
                raise ValueError(f'mlp_ratio {ratio} leaves stage {i} ({embed_dims[i]} '
                                 'channels) no FFN channels; use a larger ratio.')
            self.stages.append(
                SECViTStage(
                    embed_dims[i], depths[i], self.arch_settings['num_heads'][i],
                    out_channels=embed_dims[i + 1] if i < self.num_stages - 1 else None,
                    drop_path_rates=rates[first:first + depths[i]],
                    norm_cfg=norm_cfg,
                    mlp_ratio=ratio,
                    layer_scale_init_value=(layer_scale_init_value
                                            if self.arch_settings['layer_scales'][i] else 0.),
                    use_rope=use_rope,
                    use_lce=use_lce,
                    with_cp=with_cp,
                    **clusters[i]))

        self.out_norm_cfg = out_norm_cfg
        if out_norm_cfg is not None:
            for i in self.out_indices:
                self.add_module(f'norm{i}', build_norm_layer(out_norm_cfg, embed_dims[i])[1])
        self.freeze_stages()
        # The stem and downsample convs too: everything computes channels-last.
        channels_last_conv_weights(self)
        # Every load of weights (load_from, --resume, tools/test.py, inferencers) must fit.
        require_fitting_state_dict(self, self.new_parts())

    def _parse_arch(self, arch: Union[str, dict]) -> dict:
        if isinstance(arch, str):
            key = arch.lower()
            if key not in self.arch_zoo:
                raise ValueError(f'Unknown SECViT arch {arch!r}; choose one of '
                                 f'{sorted(set(self.arch_zoo))} or pass a dict.')
            settings = dict(self.arch_zoo[key])
        elif isinstance(arch, dict):
            missing = {'embed_dims', 'depths', 'num_heads'} - set(arch)
            if missing:
                raise ValueError(f'A custom SECViT arch dict needs the keys {sorted(missing)}; '
                                 f'got {sorted(arch)}.')
            settings = dict(arch)
        else:
            raise TypeError(f'`arch` must be a str or a dict, got {type(arch).__name__}.')
        settings.setdefault('mlp_ratios', [3] * self.num_stages)
        settings.setdefault('layer_scales', [False] * self.num_stages)
        for key in ('embed_dims', 'depths', 'num_heads', 'mlp_ratios', 'layer_scales'):
            if isinstance(settings[key], (str, bytes)) or not isinstance(
                    settings[key], Sequence) or len(settings[key]) != self.num_stages:
                raise ValueError(f'SECViT arch `{key}` needs {self.num_stages} entries, one '
                                 f'per stage; got {settings[key]!r}.')
        for key in ('embed_dims', 'depths', 'num_heads'):
            if not all(is_int(v) and v > 0 for v in settings[key]):
                raise ValueError(f'SECViT arch `{key}` must be positive ints; got '
                                 f'{settings[key]!r}.')
        bad_heads = [(c, h) for c, h in zip(settings['embed_dims'], settings['num_heads'])
                     if c % h]
        if bad_heads:
            raise ValueError(f'SECViT arch `embed_dims` must be multiples of `num_heads`; got '
                             f'{settings["embed_dims"]} with {settings["num_heads"]} heads.')
        for ratio in settings['mlp_ratios']:
            check_positive_number('SECViT', 'arch `mlp_ratios` entry', ratio)
        return settings

    def _per_stage(self, num_clusters, cluster_size) -> List[Dict[str, int]]:
        return expand_cluster_setting('SECViT', num_clusters, cluster_size,
                                      self.default_num_clusters, self.num_stages, 'stage')

    def new_parts(self) -> List[str]:
        # The output norms of dense prediction: a classification checkpoint lacks them.
        return [f'norm{i}.' for i in self.out_indices]

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'SECViT expects images of shape (B, {self.in_channels}, H, W), '
                             f'got {tuple(x.shape)}.')
        weight_dtype = self.patch_embed[0].conv.weight.dtype
        # (Lower precision than the weights is autocast's business; more is a mistake.)
        if not x.is_floating_point() or (x.dtype == torch.float64 != weight_dtype):
            raise TypeError(
                f'SECViT expects {weight_dtype} images (its weights are {weight_dtype}); got '
                f'{x.dtype}. Normalise integer images first (a data preprocessor does), or '
                f'convert the input (x.to({weight_dtype})) or the model.')
        # Channels-last throughout: 1x1 convs become plain matrix products over tokens,
        # depthwise convs and LayerNorm over channels run several times faster, and SEC
        # attention reads tokens without copies. Results are unchanged.
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
        outs = []
        for i, stage in enumerate(self.stages):
            out, x = stage(x)
            if i in self.out_indices:
                if self.out_norm_cfg is not None:
                    out = getattr(self, f'norm{i}')(out)
                # Returned in the default layout, which every neck and head expects.
                outs.append(out.contiguous())
        return tuple(outs)

    def frozen_modules(self) -> List[nn.Module]:
        frozen = []
        if self.frozen_stages >= 0:
            frozen.append(self.patch_embed)
        frozen += list(self.stages[:max(self.frozen_stages, 0)])
        frozen += [getattr(self, f'norm{i}') for i in self.out_indices
                   if i < self.frozen_stages and hasattr(self, f'norm{i}')]
        return frozen
