"""SEC-FasterViT: NVIDIA's FasterViT with SEC attention in place of its hierarchical attention.

FasterViT's modules come from its own implementation, the ``fastervit`` package (an optional
extra, imported when a model is built), so ``sec_mm`` imports without it.
"""
import re
import warnings
from types import ModuleType
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import Tensor

from sec_mm.models.layers import SECMultiheadAttention
from sec_mm.models.utils import FrozenStagesMixin, StrictPretrainedMixin, expand_cluster_setting

#: The extra that provides FasterViT (setup.py ``extras_require['fastervit']``).
FASTERVIT_EXTRA = 'pip install "sec_mm[fastervit]" (fastervit==1.0.0, timm==1.0.31)'

# FasterViT block parts that belong to its hierarchical (window + carrier-token) attention:
# the carrier tokens' attention, MLP, norms, position MLP and layer scales, and the window
# attention's relative position bias. SEC attention has no counterpart for them.
_REPLACED_BLOCK_PARTS = re.compile(
    r'\.(hat_norm1|hat_norm2|hat_attn|hat_mlp|hat_pos_embed|gamma1|gamma2|attn\.pos_emb_funct)'
    r'(\.|$)')


def import_fastervit() -> ModuleType:
    """``fastervit.models.faster_vit``, FasterViT's model code, or an ImportError saying how to
    install it."""
    try:
        with warnings.catch_warnings():
            # fastervit 1.0.0 imports timm's deprecated module paths (timm.models.layers, ...).
            warnings.filterwarnings('ignore', message='Importing from timm', category=FutureWarning)
            from fastervit.models import faster_vit
    except ImportError as error:
        raise ImportError(
            f'SECFasterViT builds on NVIDIA\'s FasterViT implementation, which is not '
            f'installed ({error}). Install the extra: {FASTERVIT_EXTRA}.') from error
    return faster_vit


def map_coordinates(height: int, width: int, device: torch.device,
                    dtype: torch.dtype) -> Tensor:
    """Token positions as FasterViT's position MLP takes them, for a whole ``height x width``
    map.

    Each axis of ``n`` positions is scaled as ``(i - n // 2) / (n // 2)`` (FasterViT's
    ``PosEmbMLPSwinv1D`` does this for square maps; a 7-wide axis spans ``[-1, 1]``), a
    one-wide axis is 0.

    Returns:
        Tensor: ``(height * width, 2)`` ``(h, w)`` positions in row-major token order.
    """
    axes = []
    for size in (height, width):
        coords = torch.arange(size, device=device, dtype=dtype) - size // 2
        axes.append(coords / (size // 2) if size > 1 else coords)
    grid = torch.stack(torch.meshgrid(*axes, indexing='ij'), dim=-1)
    return grid.reshape(height * width, 2)


class SECFasterViTBlock(nn.Module):
    """FasterViT's transformer block on a whole feature map, with SEC attention.

    FasterViT's HAT block without windows and carrier tokens, its window attention replaced by
    :class:`~sec_mm.models.layers.SECMultiheadAttention` (SECA: RoPE and LCE on by default)::

        x = x + PosMLP(positions)                       # only with ``with_pos_embed``
        x = x + DropPath(gamma3 * SECA(LayerNorm(x)))
        x = x + DropPath(gamma4 * Mlp(LayerNorm(x)))

    Parameter names are FasterViT's (``pos_embed``, ``norm1``, ``attn.qkv``, ``attn.proj``,
    ``norm2``, ``mlp``, ``gamma3``, ``gamma4``), so FasterViT checkpoints load into it.

    Args:
        embed_dims (int): Channels ``C``.
        num_heads (int): Attention heads.
        mlp_ratio (float): Hidden width of the MLP over ``C``. Defaults to 4.
        qkv_bias (bool): Bias of the qkv projection. Defaults to True.
        qk_scale (float, optional): Attention logit scale; ``head_dims ** -0.5`` if None.
        drop_rate (float): Dropout after the attention projection and in the MLP.
            Defaults to 0.
        drop_path_rate (float): Stochastic depth of both residual branches. Defaults to 0.
        layer_scale (float, optional): Initial layer scale ``gamma3``/``gamma4``; None
            disables it. Defaults to None.
        with_pos_embed (bool): Add FasterViT's position MLP of the token positions over the
            whole map (:func:`map_coordinates`). Defaults to True.
        window_size (int): FasterViT's attention window, only the shape of the position
            MLP's cached embedding (``pos_embed.relative_bias``, ``(1, window_size ** 2, C)``)
            that FasterViT checkpoints carry. Defaults to 7.
        **attn_cfg: ``num_clusters`` or ``cluster_size``, ``use_rope``, ``use_lce`` of
            :class:`SECMultiheadAttention`.

    Shape:
        - x: ``(B, H * W, C)`` tokens in row-major ``(h, w)`` order.
        - output: ``(B, H * W, C)``.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = True,
                 qk_scale: Optional[float] = None,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 layer_scale: Optional[float] = None,
                 with_pos_embed: bool = True,
                 window_size: int = 7,
                 **attn_cfg) -> None:
        super().__init__()
        fastervit = import_fastervit()
        # FasterViT's module, for its MLP; its windowed forward is not used (see forward).
        self.pos_embed = (fastervit.PosEmbMLPSwinv1D(embed_dims, rank=2,
                                                     seq_length=window_size**2)
                          if with_pos_embed else None)
        self.norm1 = nn.LayerNorm(embed_dims)
        self.attn = SECMultiheadAttention(
            embed_dims, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, proj_drop=drop_rate,
            **attn_cfg)
        self.drop_path = (fastervit.DropPath(drop_path_rate) if drop_path_rate > 0. else
                          nn.Identity())
        self.norm2 = nn.LayerNorm(embed_dims)
        self.mlp = fastervit.Mlp(embed_dims, int(embed_dims * mlp_ratio), drop=drop_rate)
        self.gamma3 = self.gamma4 = None
        if layer_scale is not None:
            self.gamma3 = nn.Parameter(layer_scale * torch.ones(embed_dims))
            self.gamma4 = nn.Parameter(layer_scale * torch.ones(embed_dims))

    def forward(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        """Run the block on ``(B, H * W, C)`` tokens of an ``hw_shape`` map."""
        if self.pos_embed is not None:
            # FasterViT's PosEmbMLPSwinv1D.forward handles square maps only; its MLP is
            # applied to the positions of any H x W here (the same values for square maps).
            x = x + self.pos_embed.cpb_mlp(map_coordinates(*hw_shape, x.device, x.dtype))
        attn = self.attn(self.norm1(x), hw_shape)
        x = x + self.drop_path(attn if self.gamma3 is None else self.gamma3 * attn)
        mlp = self.mlp(self.norm2(x))
        return x + self.drop_path(mlp if self.gamma4 is None else self.gamma4 * mlp)


class SECFasterViTStage(nn.Module):
    """SEC-FasterViT blocks at one resolution, then FasterViT's optional downsample.

    Args:
        embed_dims (int): Channels of the stage.
        depth (int): Number of blocks.
        num_heads (int): Attention heads.
        drop_path_rates (Sequence[float]): Stochastic depth rate of every block.
        downsample (bool): End with FasterViT's downsample (LayerNorm2d, 3x3 stride-2 conv to
            ``2 * embed_dims`` channels).
        **block_cfg: Further :class:`SECFasterViTBlock` arguments.
    """

    def __init__(self, embed_dims: int, depth: int, num_heads: int,
                 drop_path_rates: Sequence[float], downsample: bool, **block_cfg) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([
            SECFasterViTBlock(embed_dims, num_heads, drop_path_rate=drop_path_rates[i],
                              **block_cfg) for i in range(depth)
        ])
        self.downsample = import_fastervit().Downsample(embed_dims) if downsample else None

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Return the blocks' output ``(B, C, H, W)`` and the next stage's input."""
        batch, channels, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        for block in self.blocks:
            tokens = block(tokens, (height, width))
        out = tokens.transpose(1, 2).reshape(batch, channels, height, width)
        return out, (out if self.downsample is None else self.downsample(out))


class SECFasterViT(StrictPretrainedMixin, FrozenStagesMixin, BaseModule):
    """FasterViT whose hierarchical attention is SEC attention ("SEC-FasterViT"), from
    `Semantic Equitable Clustering: A Simple, Fast and Effective Strategy for Vision
    Transformer <https://arxiv.org/abs/2405.13337>`_.

    FasterViT (`Hatamizadeh et al., ICLR 2024 <https://arxiv.org/abs/2306.06189>`_), built from
    NVIDIA's ``fastervit`` package, unchanged except for the attention of stages 3 and 4: the
    stem, the convolutional stages 1-2, the downsamples, the MLPs, norms and the final
    BatchNorm are FasterViT's own modules. Stage 3's hierarchical attention (7x7 windows plus
    carrier tokens) and stage 4's window attention become SEC attention over the whole map
    (SECA, with its RoPE and LCE): 2 clusters in stage 3 and global attention in stage 4 by
    default (the papers' clusters of the third and last stages; at 224 that is 98 tokens per
    cluster in stage 3 and all 49 in stage 4, where FasterViT's one 7x7 window was the whole
    map too).

    Position encodings: FasterViT's window attention bias and the carrier tokens' position MLP
    go with the attention. Its token position MLP stays in stage 4, where at 224 it encodes
    positions on the whole 7x7 map, and now does so for any map size; in stage 3 it encoded
    positions inside the 7x7 windows that SEC removes, so it goes and RoPE takes its place.
    This also lands on the papers' sizes: 25.1M and 40.9M parameters with the 1000-class
    linear head (papers: 25M and 41M; FasterViT-0/1: 31.4M and 53.4M).

    FasterViT checkpoints of the ``fastervit`` package (its model's state dict, bare or under
    ``state_dict`` / ``model``) load with ``init_cfg=dict(type='Pretrained', checkpoint=...)``:
    the keys of the replaced attention parts and of the classifier head are skipped and listed
    in the log, SEC's LCE convolutions are newly initialised and listed, anything else that
    does not fit raises. Under ``backbone.`` (``load_from``) the attention keys are skipped
    the same way.

    Args:
        arch (str | dict): ``'0'`` or ``'1'``, or a dict with ``embed_dims`` (4 entries, each
            twice the previous), ``stem_channels``, ``depths`` (4) and ``num_heads`` (4;
            the first two, of the convolutional stages, are unused and may be None), and
            optionally FasterViT's ``window_size`` (default 7; see
            :class:`SECFasterViTBlock`). Defaults to ``'0'``.
        in_channels (int): Input image channels. Defaults to 3.
        num_clusters (int | Sequence[int], optional): SEC clusters of stages 3 and 4 (one
            value or two); ``<= 1`` means global attention. Defaults to ``(2, -1)`` unless
            ``cluster_size`` is given.
        cluster_size (int | Sequence[int], optional): Tokens per cluster in stages 3 and 4
            instead, so attention cost grows linearly with the image area (98 matches the
            2 clusters of stage 3 at 224x224). Not together with ``num_clusters``.
        use_rope (bool): 2-D RoPE in SEC attention. Defaults to True.
        use_lce (bool): Local context enhancement in SEC attention. Defaults to True.
        mlp_ratio (float): MLP hidden width over the channels in stages 3-4. Defaults to 4.
        drop_rate (float): Dropout in the attention projection and MLP. Defaults to 0.
        drop_path_rate (float): Stochastic depth, linear from 0 over all blocks (FasterViT-0
            and -1 use 0.2). Defaults to 0.2.
        layer_scale (float, optional): Layer scale of the SEC blocks; None (FasterViT-0/1)
            disables it. Defaults to None.
        layer_scale_conv (float, optional): Layer scale of the conv blocks. Defaults to None.
        out_indices (Sequence[int]): Stages whose outputs are returned (strides 4, 8, 16, 32;
            taken after the blocks, before the downsample; stage 4's after FasterViT's final
            BatchNorm). Defaults to ``(3, )``.
        frozen_stages (int): -1 trains everything; 0 freezes the stem; ``k`` freezes the stem
            and the first ``k`` stages (with their downsamples; ``k = 4`` also the final
            norm). Defaults to -1.
        norm_eval (bool): Keep BatchNorm layers in eval mode while training. Defaults to False.
        init_cfg (dict | list[dict], optional): Initialisation; defaults to FasterViT's
            (truncated normal linear layers, std 0.02). A ``Pretrained`` entry loads a
            FasterViT or SEC-FasterViT checkpoint as described above.

    Shape:
        - input: ``(B, in_channels, H, W)``, any ``H, W``.
        - output: a tuple of ``(B, C_i, ceil(H / 2^(i+2)), ceil(W / 2^(i+2)))`` for ``i`` in
          ``out_indices``.

    Examples:
        >>> import torch
        >>> from sec_mm.models import SECFasterViT
        >>> model = SECFasterViT(arch='0', out_indices=(0, 1, 2, 3)).eval()
        >>> [tuple(f.shape) for f in model(torch.rand(1, 3, 224, 224))]
        [(1, 64, 56, 56), (1, 128, 28, 28), (1, 256, 14, 14), (1, 512, 7, 7)]
    """
    # FasterViT-0/1 (fastervit's faster_vit_{0,1}_224); heads of the conv stages are unused.
    arch_zoo: Dict[str, dict] = {
        '0': {'embed_dims': [64, 128, 256, 512], 'stem_channels': 64, 'depths': [2, 3, 6, 5],
              'num_heads': [None, None, 8, 16], 'window_size': 7},
        '1': {'embed_dims': [80, 160, 320, 640], 'stem_channels': 32, 'depths': [1, 3, 8, 5],
              'num_heads': [None, None, 8, 16], 'window_size': 7},
    }
    default_num_clusters = (2, -1)
    num_stages = 4
    #: Stages 1-2 are FasterViT's convolutional stages; these are the SEC stages.
    attention_stages = (2, 3)

    def __init__(self,
                 arch: Union[str, dict] = '0',
                 in_channels: int = 3,
                 num_clusters: Union[int, Sequence[int], None] = None,
                 cluster_size: Union[int, Sequence[int], None] = None,
                 use_rope: bool = True,
                 use_lce: bool = True,
                 mlp_ratio: float = 4.,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.2,
                 layer_scale: Optional[float] = None,
                 layer_scale_conv: Optional[float] = None,
                 out_indices: Sequence[int] = (3, ),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 init_cfg: Union[dict, List[dict], None] = None) -> None:
        self.default_init_cfg = [
            dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
            dict(type='Constant', layer=['LayerNorm', '_BatchNorm'], val=1., bias=0.)
        ]
        super().__init__(init_cfg=init_cfg if init_cfg is not None else self.default_init_cfg)
        fastervit = import_fastervit()
        self.arch_settings = self._parse_arch(arch)
        embed_dims = self.arch_settings['embed_dims']
        depths = self.arch_settings['depths']
        self.embed_dims = embed_dims
        self.in_channels = in_channels
        self.out_indices = self._parse_out_indices(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        clusters = expand_cluster_setting('SECFasterViT', num_clusters, cluster_size,
                                          self.default_num_clusters,
                                          len(self.attention_stages), 'attention stage')

        self.patch_embed = fastervit.PatchEmbed(
            in_chans=in_channels, in_dim=self.arch_settings['stem_channels'], dim=embed_dims[0])
        rates = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        self.levels = nn.ModuleList()
        for i in range(self.num_stages):
            stage_rates = rates[sum(depths[:i]):sum(depths[:i + 1])]
            downsample = i < self.num_stages - 1
            if i in self.attention_stages:
                level = SECFasterViTStage(
                    embed_dims[i], depths[i], self.arch_settings['num_heads'][i],
                    drop_path_rates=stage_rates, downsample=downsample, mlp_ratio=mlp_ratio,
                    drop_rate=drop_rate, layer_scale=layer_scale,
                    with_pos_embed=i == self.num_stages - 1,
                    window_size=self.arch_settings['window_size'], use_rope=use_rope,
                    use_lce=use_lce, **clusters[self.attention_stages.index(i)])
            else:
                # FasterViT's own convolutional stage (no attention, no windows).
                level = fastervit.FasterViTLayer(
                    dim=embed_dims[i], depth=depths[i], input_resolution=None, num_heads=None,
                    window_size=None, conv=True, downsample=downsample, drop_path=stage_rates,
                    layer_scale_conv=layer_scale_conv, only_local=True)
            self.levels.append(level)
        self.norm = nn.BatchNorm2d(embed_dims[-1])
        self.freeze_stages()
        # FasterViT checkpoints: drop the replaced attention parts whenever a state dict is
        # loaded (mmengine's load_checkpoint / load_from as well as init_cfg).
        self._register_load_state_dict_pre_hook(self._drop_replaced_attention_keys)

    def _parse_arch(self, arch: Union[str, dict]) -> dict:
        if isinstance(arch, str):
            if arch not in self.arch_zoo:
                raise ValueError(f'Unknown SECFasterViT arch {arch!r}; choose one of '
                                 f'{sorted(self.arch_zoo)} or pass a dict.')
            return dict(self.arch_zoo[arch])
        if not isinstance(arch, dict):
            raise TypeError(f'`arch` must be a str or a dict, got {type(arch).__name__}.')
        missing = {'embed_dims', 'stem_channels', 'depths', 'num_heads'} - set(arch)
        if missing:
            raise ValueError(f'A custom SECFasterViT arch dict needs the keys '
                             f'{sorted(missing)}; got {sorted(arch)}.')
        for key in ('embed_dims', 'depths', 'num_heads'):
            if len(arch[key]) != self.num_stages:
                raise ValueError(f'SECFasterViT arch `{key}` needs {self.num_stages} entries, '
                                 f'one per stage; got {arch[key]!r}.')
        dims = list(arch['embed_dims'])
        if any(dims[i + 1] != 2 * dims[i] for i in range(self.num_stages - 1)):
            raise ValueError(f'FasterViT doubles the channels at every downsample: arch '
                             f'`embed_dims` must be [C, 2C, 4C, 8C], got {dims}.')
        return {'window_size': 7, **arch}

    def _parse_out_indices(self, out_indices: Union[int, Sequence[int]]) -> Tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        parsed = []
        for index in out_indices:
            if not -self.num_stages <= index < self.num_stages:
                raise ValueError(f'out_indices entries must be stage indices in '
                                 f'[0, {self.num_stages}), got {index}.')
            parsed.append(index % self.num_stages)
        return tuple(parsed)

    def _drop_replaced_attention_keys(self, state_dict: Dict[str, Tensor], prefix: str,
                                      *args, **kwargs) -> None:
        """Drop, in place, the keys of the FasterViT attention parts that SEC replaces and list
        them in one log line: carrier tokens (``global_tokenizer``, ``hat_*``, ``gamma1/2``),
        window attention bias (``attn.pos_emb_funct``) and stage 3's window position MLP."""
        without_pos_embed = tuple(
            f'levels.{i}.blocks.{j}.pos_embed.' for i in self.attention_stages
            for j, block in enumerate(self.levels[i].blocks) if block.pos_embed is None)
        attention_levels = tuple(f'levels.{i}.' for i in self.attention_stages)
        skipped = []
        for key in list(state_dict):
            name = key[len(prefix):]
            if not key.startswith(prefix) or not name.startswith(attention_levels):
                continue
            if (_REPLACED_BLOCK_PARTS.search(name) or '.global_tokenizer.' in name
                    or name.startswith(without_pos_embed)):
                del state_dict[key]
                skipped.append(name)
        if skipped:
            print_log(f'{type(self).__name__}: skipped {len(skipped)} keys of FasterViT\'s '
                      f'hierarchical attention that SEC attention replaces: '
                      f'{", ".join(skipped)}', logger='current')

    def adapt_checkpoint(self, state: Dict[str, Tensor]) -> Dict[str, Tensor]:
        state = dict(state)
        head = [k for k in state if k.startswith('head.')]
        for key in head:
            del state[key]
        if head:
            print_log(f'{type(self).__name__}: skipped the FasterViT classifier head keys '
                      f'(not part of the backbone): {", ".join(head)}', logger='current')
        self._drop_replaced_attention_keys(state, '')
        return state

    def new_parts(self) -> List[str]:
        # What a stock FasterViT checkpoint lacks: SEC attention's LCE.
        return [k for k in self.state_dict() if '.attn.lce.' in k]

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'SECFasterViT expects images of shape (B, {self.in_channels}, '
                             f'H, W), got {tuple(x.shape)}.')
        x = self.patch_embed(x)
        outs = []
        for i, level in enumerate(self.levels):
            if i in self.attention_stages:
                out, x = level(x)
            else:
                # FasterViTLayer.forward would return only the downsampled map; the stage's
                # own output is needed for out_indices.
                for block in level.blocks:
                    x, _ = block(x)
                out = x
                if level.downsample is not None:
                    x = level.downsample(x)
            if i in self.out_indices:
                outs.append(self.norm(out) if i == self.num_stages - 1 else out)
        return tuple(outs)

    def frozen_modules(self) -> List[nn.Module]:
        frozen = []
        if self.frozen_stages >= 0:
            frozen.append(self.patch_embed)
        frozen += list(self.levels[:max(self.frozen_stages, 0)])
        if self.frozen_stages >= self.num_stages:
            frozen.append(self.norm)
        return frozen
