"""Draw the SEC clusters of a SECViT, SEC-Swin or SEC-DeiT model over an image.

    python tools/visualization/vis_clusters.py CONFIG [CHECKPOINT] IMAGE [--out OUT.png]
        [--layers NAME ...] [--head {N,majority}] [--alpha A] [--panel-size PX]
        [--device DEVICE] [--cfg-options k=v ...]

The paper's Fig. 4: the model (mmpretrain, mmdet or mmseg config; random weights without a
checkpoint) runs its backbone once on the image as the config's test pipeline and data
preprocessor prepare it, and every chosen SEC attention layer's clusters are painted over
the image, one colour per cluster, one panel per layer after a panel with the image itself.

Clusters come from the ``order_probe`` of the attention layers: the ``(B, heads, L)`` token
order that SEC attention cuts into clusters passes through it, so a forward hook reads it.
The token at sorted position ``p`` is in the cluster whose ``torch.tensor_split`` chunk
holds ``p`` (:func:`sec_mm.ops.sec_cluster_sizes`): cluster 0 holds the tokens whose keys
are least similar to the mean key, the last cluster the most similar ones. Colours follow
that order along ``--cmap``.

By default the last SEC attention layer of every stage that clusters (hierarchical
backbones), or four evenly spaced layers (SEC-DeiT); stages that attend globally (one
cluster, e.g. SECViT's stage 4) have no panel. Every head clusters on its own: ``--head N``
shows head ``N`` (default 0), ``--head majority`` the cluster most heads put each token in.
"""
import argparse
import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from mmengine.config import DictAction  # light: no torch


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Draw the SEC clusters of chosen layers over an image (paper Fig. 4)')
    parser.add_argument('config', help='mmpretrain, mmdet or mmseg config of a SEC model')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='checkpoint file (optional: random weights without it)')
    parser.add_argument('image', help='image file')
    parser.add_argument('--out', default='cluster_maps.png', help='PNG file to write')
    parser.add_argument(
        '--layers', nargs='+', default=None, metavar='NAME',
        help='module names of SEC attention layers, e.g. backbone.stages.2.blocks.8.attn '
        '(the "backbone." prefix may be left out); default: the last clustering layer of '
        'every stage')
    parser.add_argument(
        '--head', default='0',
        help='attention head whose clusters are drawn, or "majority" for the cluster most '
        'heads put each token in. Defaults to 0')
    parser.add_argument('--alpha', type=float, default=0.55,
                        help='opacity of the cluster colours over the image. Defaults to 0.55')
    parser.add_argument('--cmap', default='turbo',
                        help='matplotlib colormap the cluster colours are taken from, in '
                        'cluster order. Defaults to turbo')
    parser.add_argument('--panel-size', type=int, default=320,
                        help='pixels of the longer side of every panel. Defaults to 320')
    parser.add_argument('--device', default='cpu', help='device to run the model on')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value pairs (xxx=yyy); no white space')
    args = parser.parse_args(argv)
    if args.head != 'majority':
        try:
            args.head = int(args.head)
        except ValueError:
            parser.error(f'--head takes a head index or "majority", got {args.head!r}.')
    if not 0 <= args.alpha <= 1:
        parser.error(f'--alpha must lie in [0, 1], got {args.alpha}.')
    if args.panel_size < 16:
        parser.error(f'--panel-size must be at least 16 pixels, got {args.panel_size}.')
    return args


if __name__ == '__main__':
    parse_args()  # --help and bad arguments answer before the heavy imports below

import cv2  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from mmcv.transforms import Compose  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.dataset import pseudo_collate  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from torch import Tensor  # noqa: E402

from sec_mm.models.layers import SECAttention, SECMultiheadAttention  # noqa: E402
from sec_mm.ops import sec_cluster_sizes  # noqa: E402
from sec_mm.engine.launch import load_config  # noqa: E402
from sec_mm.utils import codebase_of  # noqa: E402

SEC_LAYERS = (SECAttention, SECMultiheadAttention)
TITLE_HEIGHT = 44  # pixels above every panel for its title
GAP = 8  # pixels between and around the panels
DEFAULT_PLAIN_LAYERS = 4  # panels of a backbone without stages (SEC-DeiT)


class ClusterMap(NamedTuple):
    """Clusters of one SEC attention layer.

    Attributes:
        name (str): Module name of the layer in the model.
        ids (np.ndarray): ``(h, w)`` int64 cluster id of every token of the layer's grid.
        num_clusters (int): Clusters of the layer at this input size (1: global attention).
    """
    name: str
    ids: np.ndarray
    num_clusters: int


def init_model(cfg: Config, checkpoint: Optional[str], device: str) -> nn.Module:
    """The model of ``cfg`` in eval mode, built by its codebase's own inference API."""
    codebase = codebase_of(cfg)
    # The test pipeline is built from the codebase's registries too.
    init_default_scope(codebase)
    if codebase == 'mmdet':
        from mmdet.apis import init_detector
        # No pretrained backbone: the checkpoint (or random weights) is what is looked at.
        cfg.model.backbone.init_cfg = None
        return init_detector(cfg, checkpoint, device=device)
    if codebase == 'mmseg':
        from mmseg.apis import init_model as init_segmentor
        return init_segmentor(cfg, checkpoint, device=device)
    from mmpretrain.apis import get_model
    return get_model(cfg, pretrained=checkpoint or False, device=device).eval()


def prepare_image(model: nn.Module, cfg: Config, image: str) -> Tuple[Tensor, np.ndarray]:
    """Run the config's test pipeline and the model's data preprocessor on ``image``.

    Annotation loading is dropped from the pipeline (there are none for a bare image).

    Returns:
        tuple: The ``(1, 3, H_pad, W_pad)`` model input and the ``(h, w, 3)`` uint8 RGB image
        it was made from (after resizing and cropping, before normalisation and padding).
    """
    pipeline = [t for t in cfg.test_dataloader.dataset.pipeline
                if t['type'].split('.')[-1] != 'LoadAnnotations']
    data = Compose(pipeline)(dict(img_path=image, img_id=0))
    # The pipelines pack BGR images (C, H, W).
    shown = data['inputs'].permute(1, 2, 0).numpy()[..., ::-1].astype(np.uint8)
    with torch.no_grad():
        inputs = model.data_preprocessor(pseudo_collate([data]), False)['inputs']
    return inputs, np.ascontiguousarray(shown)


def sec_layer_names(model: nn.Module) -> List[str]:
    """Module names of every SEC attention layer of ``model``, in forward order."""
    return [name for name, module in model.named_modules() if isinstance(module, SEC_LAYERS)]


def default_layers(names: Sequence[str]) -> List[str]:
    """The last layer of every stage (``...stages.<i>...``), or, without stages, a few evenly
    spaced layers ending with the last one."""
    stages = [re.match(r'(.*stages\.\d+)\.', name) for name in names]
    if all(stages):
        last: Dict[str, str] = {}
        for stage, name in zip(stages, names):
            last[stage.group(1)] = name
        return list(last.values())
    count = min(DEFAULT_PLAIN_LAYERS, len(names))
    return [names[round(len(names) * (i + 1) / count) - 1] for i in range(count)]


def resolve_layers(model: nn.Module, layers: Optional[Sequence[str]]) -> List[str]:
    """Full module names of the requested SEC attention layers (default: see module doc)."""
    names = sec_layer_names(model)
    if not names:
        raise ValueError(f'{type(model).__name__} has no SEC attention layer '
                         '(SECAttention or SECMultiheadAttention): use a SECViT, SEC-Swin or '
                         'SEC-DeiT config.')
    if layers is None:
        return default_layers(names)
    resolved = []
    for layer in layers:
        for candidate in (layer, f'backbone.{layer}'):
            if candidate in names:
                resolved.append(candidate)
                break
        else:
            raise ValueError(f'--layers: {layer!r} is not a SEC attention layer of the model; '
                             f'choose from: {", ".join(names)}.')
    return resolved


def cluster_ids(order: Tensor, num_clusters: int) -> Tensor:
    """Cluster id of every token from the SEC token order.

    Args:
        order (Tensor): ``(..., L)`` token indices in sorted order (:func:`sec_order`).
        num_clusters (int): Clusters the sorted tokens are cut into, as
            ``torch.tensor_split`` cuts (:func:`sec_cluster_sizes`).

    Returns:
        Tensor: ``(..., L)`` int64, the cluster of every token in the original token order.
    """
    length = order.shape[-1]
    sizes = torch.tensor(sec_cluster_sizes(length, num_clusters), device=order.device)
    cluster_of_rank = torch.repeat_interleave(torch.arange(num_clusters, device=order.device),
                                              sizes)
    ids = torch.empty_like(order)
    return ids.scatter_(-1, order, cluster_of_rank.expand_as(order).contiguous())


def reduce_heads(ids: Tensor, head: Union[int, str]) -> Tensor:
    """``(heads, L)`` cluster ids -> ``(L, )``: one head's, or the majority over heads."""
    if head == 'majority':
        # Ties go to the lower cluster id (torch.mode).
        return ids.mode(dim=0).values
    if not -ids.shape[0] <= head < ids.shape[0]:
        raise ValueError(f'--head {head} does not exist: the layer has {ids.shape[0]} heads '
                         f'(0 to {ids.shape[0] - 1}).')
    return ids[head]


def _grid_of_patch_embed(model: nn.Module, store: dict):
    """Hook recording the token grid mmpretrain's ``PatchEmbed`` returns beside the tokens
    (the grid of a plain ViT, whose attention layers are not given it)."""
    patch_embed = getattr(getattr(model, 'backbone', model), 'patch_embed', None)
    if patch_embed is None:
        return None

    def hook(module, args, output):
        if isinstance(output, tuple) and len(output) == 2 and len(output[1]) == 2:
            store['grid'] = tuple(int(s) for s in output[1])

    return patch_embed.register_forward_hook(hook)


def compute_cluster_maps(model: nn.Module, inputs: Tensor, layers: Sequence[str],
                         head: Union[int, str] = 0) -> List[ClusterMap]:
    """Run ``model.backbone`` once on ``inputs`` and read the clusters of ``layers``.

    Args:
        model (nn.Module): An mmpretrain, mmdet or mmseg model with a SEC backbone.
        inputs (Tensor): ``(1, 3, H, W)`` preprocessed image.
        layers (Sequence[str]): Module names of SEC attention layers.
        head (int | str): Head index, or ``'majority'``.

    Returns:
        list[ClusterMap]: One per layer, in the order of ``layers``.
    """
    if inputs.dim() != 4 or inputs.shape[0] != 1:
        raise ValueError(f'compute_cluster_maps draws one image: inputs must be (1, 3, H, W), '
                         f'got {tuple(inputs.shape)}.')
    modules = dict(model.named_modules())
    grids: Dict[str, Optional[Tuple[int, int]]] = {}
    num_tokens: Dict[str, int] = {}
    orders: Dict[str, Tensor] = {}
    patch_grid: dict = {}
    handles = []
    for name in layers:
        attn = modules[name]

        def record_grid(module, args, kwargs, name=name):
            x = args[0] if args else kwargs['x']
            if x.dim() == 4:  # SECAttention: (B, C, H, W)
                grids[name] = tuple(x.shape[-2:])
                num_tokens[name] = x.shape[-2] * x.shape[-1]
                return
            # SECMultiheadAttention: (B, N, C); SEC-Swin passes the grid, SEC-DeiT does not
            # (its grid is the patch grid).
            hw_shape = args[1] if len(args) > 1 else kwargs.get('hw_shape')
            grids[name] = (tuple(int(s) for s in hw_shape) if hw_shape is not None else
                           patch_grid.get('grid'))
            num_tokens[name] = x.shape[1] - module.num_extra_tokens

        def record_order(module, args, output, name=name):
            orders[name] = output.detach()

        handles.append(attn.register_forward_pre_hook(record_grid, with_kwargs=True))
        handles.append(attn.order_probe.register_forward_hook(record_order))
    patch_handle = _grid_of_patch_embed(model, patch_grid)
    if patch_handle is not None:
        handles.append(patch_handle)
    try:
        with torch.no_grad():
            getattr(model, 'backbone', model)(inputs)
    finally:
        for handle in handles:
            handle.remove()

    maps = []
    for name in layers:
        if name not in grids:
            raise RuntimeError(f'SEC attention layer {name} did not run on this input.')
        grid = grids[name]
        attn = modules[name]
        if grid is None or grid[0] * grid[1] != num_tokens[name]:
            raise RuntimeError(f'Cannot tell the token grid of {name}: {num_tokens[name]} '
                               f'image tokens, grid {grid}.')
        count = attn.clusters_for(grid[0] * grid[1])
        if name in orders:
            ids = reduce_heads(cluster_ids(orders[name][0], count), head)
        else:  # one cluster: global attention, no order
            ids = torch.zeros(grid[0] * grid[1], dtype=torch.int64)
        maps.append(ClusterMap(name, ids.reshape(grid).cpu().numpy(), count))
    return maps


def layer_title(cluster_map: ClusterMap) -> str:
    """A short title: stage/block (or layer) numbers from 1, grid and cluster count."""
    name = cluster_map.name
    match = re.search(r'stages\.(\d+)\.blocks\.(\d+)', name)
    if match:
        where = f'stage {int(match.group(1)) + 1}, block {int(match.group(2)) + 1}'
    else:
        match = re.search(r'layers\.(\d+)', name)
        where = f'layer {int(match.group(1)) + 1}' if match else name
    height, width = cluster_map.ids.shape
    return f'{where}\n{cluster_map.num_clusters} clusters, {height}x{width} tokens'


def panel_shape(image_shape: Tuple[int, int], panel_size: int) -> Tuple[int, int]:
    """``(height, width)`` of a panel: the image scaled to ``panel_size`` on its long side."""
    height, width = image_shape
    scale = panel_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def figure_shape(image_shape: Tuple[int, int], num_panels: int,
                 panel_size: int) -> Tuple[int, int]:
    """``(height, width)`` in pixels of the PNG :func:`draw_cluster_maps` writes: panels in
    a row, ``GAP`` pixels around and between them, a ``TITLE_HEIGHT`` band above."""
    height, width = panel_shape(image_shape, panel_size)
    return (TITLE_HEIGHT + height + GAP, num_panels * width + (num_panels + 1) * GAP)


def paint_clusters(image: np.ndarray, cluster_map: ClusterMap, padded_shape: Tuple[int, int],
                   panel: Tuple[int, int], alpha: float, cmap: str) -> np.ndarray:
    """The ``(panel_h, panel_w, 3)`` float RGB panel: ``image`` with the cluster colours.

    The token grid covers the padded model input; its top-left ``image``-sized part is
    drawn.
    """
    grid_h, grid_w = cluster_map.ids.shape
    pad_h, pad_w = padded_shape
    height, width = image.shape[:2]
    # Token of every image pixel (nearest), then of every panel pixel.
    rows = np.minimum(np.arange(height) * grid_h // pad_h, grid_h - 1)
    cols = np.minimum(np.arange(width) * grid_w // pad_w, grid_w - 1)
    ids = cluster_map.ids[rows[:, None], cols[None, :]]
    ids = cv2.resize(ids.astype(np.int32), panel[::-1], interpolation=cv2.INTER_NEAREST)
    count = cluster_map.num_clusters
    colours = colormaps[cmap](np.linspace(0, 1, count) if count > 1 else [0.5])[:, :3]
    shown = cv2.resize(image, panel[::-1], interpolation=cv2.INTER_LINEAR) / 255.
    return (1 - alpha) * shown + alpha * colours[ids]


def draw_cluster_maps(image: np.ndarray, maps: Sequence[ClusterMap],
                      padded_shape: Tuple[int, int], out: str, alpha: float = 0.55,
                      cmap: str = 'turbo', panel_size: int = 320) -> Tuple[int, int]:
    """Write the image and one panel per cluster map, left to right, as a PNG.

    Args:
        image (np.ndarray): ``(h, w, 3)`` uint8 RGB image the model saw (before padding).
        maps (Sequence[ClusterMap]): Cluster maps over the padded model input.
        padded_shape (tuple[int, int]): ``(H, W)`` of the padded model input.
        out (str): PNG file.
        alpha (float): Opacity of the cluster colours.
        cmap (str): Matplotlib colormap the colours are sampled from, in cluster order.
        panel_size (int): Pixels of the longer side of every panel.

    Returns:
        tuple[int, int]: ``(height, width)`` of the PNG (:func:`figure_shape`).
    """
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt
    panel = panel_shape(image.shape[:2], panel_size)
    height, width = figure_shape(image.shape[:2], len(maps) + 1, panel_size)
    dpi = 100
    figure = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    panels = [('image', cv2.resize(image, panel[::-1], interpolation=cv2.INTER_LINEAR) / 255.)]
    panels += [(layer_title(m), paint_clusters(image, m, padded_shape, panel, alpha, cmap))
               for m in maps]
    for i, (title, pixels) in enumerate(panels):
        left = GAP + i * (panel[1] + GAP)
        # Axes placed in whole pixels (from the bottom-left), so the panels are not resampled.
        axes = figure.add_axes([left / width, GAP / height, panel[1] / width,
                                panel[0] / height])
        axes.imshow(np.clip(pixels, 0, 1), interpolation='nearest', aspect='auto')
        axes.set_axis_off()
        axes.set_title(title, fontsize=9, pad=3)
    figure.savefig(out, dpi=dpi)
    plt.close(figure)
    return height, width


def main(argv: Optional[Sequence[str]] = None) -> List[ClusterMap]:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    model = init_model(cfg, args.checkpoint, args.device)
    inputs, image = prepare_image(model, cfg, args.image)
    layers = resolve_layers(model, args.layers)
    maps = compute_cluster_maps(model, inputs, layers, args.head)
    if args.layers is None:
        # Default layers: stages that attend globally have nothing to show.
        maps = [m for m in maps if m.num_clusters > 1]
        if not maps:
            raise ValueError(f'No SEC attention layer of {args.config} clusters the tokens of '
                             f'this {tuple(inputs.shape[-2:])} input; pass --layers.')
    draw_cluster_maps(image, maps, tuple(inputs.shape[-2:]), args.out, args.alpha, args.cmap,
                      args.panel_size)
    head = 'majority over heads' if args.head == 'majority' else f'head {args.head}'
    print(f'Input {tuple(inputs.shape[-2:])} (image {image.shape[0]}x{image.shape[1]}), '
          f'{head}:')
    for cluster_map in maps:
        print(f'  {cluster_map.name}: {cluster_map.ids.shape[0]}x{cluster_map.ids.shape[1]} '
              f'tokens, {cluster_map.num_clusters} clusters')
    print(f'Saved {args.out}')
    return maps


if __name__ == '__main__':
    main()
