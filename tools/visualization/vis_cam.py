"""Class activation maps (Grad-CAM and the other methods of the ``grad-cam`` package) of an
mmpretrain classifier, e.g. SECViT.

    python tools/visualization/vis_cam.py IMAGE CONFIG CHECKPOINT
        [--target-layers NAME ...] [--method GradCAM] [--target-category N ...]
        [--save-path OUT.png] [--vit-like] [--num-extra-tokens N] [--device DEVICE] ...

The arguments are those of mmpretrain's ``tools/visualization/vis_cam.py`` (parsed here before
anything heavy is imported), and its layer lookup, token reshaping and drawing are used as
they are. That tool builds the
CAM with ``use_cuda=...``, an argument grad-cam 1.5 removed (the CAM follows the model's
device now), so with grad-cam >= 1.5 it stops with ``TypeError: ... unexpected keyword
argument 'use_cuda'``; this tool builds the CAM for either API.

SECViT returns ``(B, C, H, W)`` maps, so it needs no ``--vit-like``. Good target layers are
the blocks: ``backbone.stages.3.blocks.<depth - 1>`` for the last stage (``blocks.1`` for
SECViT-T, ``blocks.3`` for S, ``blocks.7`` for B and L), ``backbone.stages.<i>.blocks.<last>``
for the earlier stages. A stage itself cannot be a target: it returns a tuple. Without
``--target-layers`` the stock choice is the backbone's last norm layer, the last block's
``norm2`` (before its FFN).
"""
import argparse
import copy
import importlib.util
import inspect
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Callable, List, Optional

from mmengine.config import DictAction  # light: no torch


def parse_args(argv=None) -> argparse.Namespace:
    """The options of mmpretrain's ``vis_cam.py``."""
    parser = argparse.ArgumentParser(description='Visualize CAM')
    parser.add_argument('img', help='image file')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--target-layers', default=[], nargs='+',
                        help='layers to take the CAM of (default: the norm layer of the last '
                        'block)')
    parser.add_argument('--preview-model', action='store_true',
                        help='print the model layers and stop')
    parser.add_argument('--method', default='GradCAM',
                        help='a CAM class of the grad-cam package, e.g. GradCAM, GradCAM++, '
                        'XGradCAM, EigenCAM, EigenGradCAM, LayerCAM (default GradCAM)')
    parser.add_argument('--target-category', default=[], nargs='+', type=int,
                        help='categories to explain (default: the predicted one)')
    parser.add_argument('--eigen-smooth', action='store_true',
                        help='reduce noise with the first principal component')
    parser.add_argument('--aug-smooth', action='store_true', help='test-time augmentation')
    parser.add_argument('--save-path', type=Path, help='where to save the image (default: show)')
    parser.add_argument('--device', default='cpu', help='device to use (default: cpu)')
    parser.add_argument('--vit-like', action='store_true', help='a ViT-like network (tokens)')
    parser.add_argument('--num-extra-tokens', type=int,
                        help="extra tokens of a ViT-like backbone (default: the backbone's)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


if __name__ == '__main__':
    parse_args()  # --help and bad arguments answer before the heavy imports below

import mmpretrain  # noqa: E402
import torch.nn as nn  # noqa: E402
from mmcv.transforms import Compose  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.dataset import default_collate  # noqa: E402
from mmpretrain.apis import get_model  # noqa: E402
from mmpretrain.registry import TRANSFORMS  # noqa: E402

import sec_mm  # noqa: E402,F401  (the SEC models; weights-only checkpoint loading)


def load_stock_vis_cam() -> ModuleType:
    """mmpretrain's ``vis_cam.py`` as a module (``.mim/tools`` of a pip install, ``tools/``
    of a source checkout). Importing it imports ``pytorch_grad_cam``."""
    package = Path(mmpretrain.__file__).parent
    candidates = [package / '.mim' / 'tools' / 'visualization' / 'vis_cam.py',
                  package.parent / 'tools' / 'visualization' / 'vis_cam.py']
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(
            f'mmpretrain\'s tools/visualization/vis_cam.py is in none of {candidates}; '
            'reinstall mmpretrain from its wheel (`pip install mmpretrain==1.2.0`).')
    spec = importlib.util.spec_from_file_location('mmpretrain_vis_cam', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_cam(method: type, model: nn.Module, target_layers: List[nn.Module],
              reshape_transform: Optional[Callable], device: str):
    """A ``method`` (e.g. ``pytorch_grad_cam.GradCAM``) object for the model's layers, built
    with ``use_cuda`` only where that grad-cam version still takes it."""
    kwargs = dict(model=model, target_layers=target_layers,
                  reshape_transform=reshape_transform)
    if 'use_cuda' in inspect.signature(method.__init__).parameters:
        kwargs['use_cuda'] = 'cuda' in device
    return method(**kwargs)


def main(argv=None) -> None:
    args = parse_args(argv)
    stock = load_stock_vis_cam()
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    if args.method.lower() not in stock.METHOD_MAP:
        raise SystemExit(f'--method {args.method}: not a CAM method; use one of '
                         f'{", ".join(stock.METHOD_MAP)}.')
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    model = get_model(cfg, args.checkpoint, device=args.device)
    if args.preview_model:
        print(model)
        print('\nRemove --preview-model to get the CAM.')
        return

    # The config's test pipeline; the image drawn is the one the model sees (BGR, HWC).
    pipeline = Compose([TRANSFORMS.build(t) for t in cfg.test_dataloader.dataset.pipeline])
    data = pipeline(dict(img_path=args.img))
    image = copy.deepcopy(data['inputs']).numpy().transpose(1, 2, 0)
    inputs = model.data_preprocessor(default_collate([data]), False)['inputs']

    if args.target_layers:
        target_layers = [stock.get_layer(name, model) for name in args.target_layers]
    else:
        target_layers = stock.get_default_target_layers(model, args)
    cam = build_cam(stock.METHOD_MAP[args.method.lower()], model, target_layers,
                    partial(stock.reshape_transform, model=model, args=args), args.device)
    # None: the category the model predicts.
    targets = [ClassifierOutputTarget(c) for c in args.target_category] or None
    grayscale_cam = cam(inputs, targets, eigen_smooth=args.eigen_smooth,
                        aug_smooth=args.aug_smooth)
    stock.show_cam_grad(grayscale_cam, image, title=args.method, out_path=args.save_path)


if __name__ == '__main__':
    main()
