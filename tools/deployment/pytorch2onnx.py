"""Export a SECViT classifier or backbone to ONNX, and check it with ONNX Runtime.

    python tools/deployment/pytorch2onnx.py CONFIG CHECKPOINT --shape H W [--dynamic]
        [--out FILE] [--opset N] [--exporter {torchscript,dynamo}] [--backbone]
        [--verify] [--verify-shape H W] [--verify-image IMG] [--atol 1e-4]
        [--cfg-options ...]

What is exported:

- an mmpretrain classifier config (e.g. ``configs/classification/secvit``): the whole
  ``ImageClassifier`` in ``mode='tensor'``, normalised images ``input (B, 3, H, W)`` in,
  ``logits (B, num_classes)`` out;
- an mmdet or mmseg config, or any config with ``--backbone``: the backbone alone, with one
  output ``feat{i}`` ``(B, C_i, H_i, W_i)`` per stage ``i`` of its ``out_indices``.

The data preprocessor (mean/std normalisation, channel order, padding) stays outside the
graph, as in mmdeploy: feed what ``model.data_preprocessor`` produces. The checkpoint is
loaded strictly; for a backbone, keys under ``backbone.`` are taken from a whole-model file.

SEC attention switches to its export formulation inside ``torch.onnx.export`` (see
``sec_mm/ops/sec_attention_export.py``): the token sort becomes ONNX ``TopK``, which breaks ties
by the lower index exactly as the stable sort of the eager model does, and the clusters are
one padded layout computed from the token count, so ``--dynamic`` graphs serve any size.

``--verify`` runs the file in ONNX Runtime and compares every output with PyTorch (max abs
diff <= ``--atol``), on random inputs or on ``--verify-image`` (resized to each size and
normalised as the config's data preprocessor does); with ``--dynamic`` it also checks a second
input size (``--verify-shape``, by default (H + 16) x (W + 24)). The exit code is 1 when a
check fails, 2 on bad arguments.

Exporters: ``torchscript`` (default; torch.onnx's TorchScript exporter, the one mmdeploy
uses, exports in seconds) or ``dynamo`` (``torch.export`` based, torch >= 2.5 with
``onnxscript``; much slower to export, but it keeps every size computation symbolic or
fails, where a TorchScript trace may freeze a Python integer: ``--dynamic`` with the
TorchScript exporter is refused for ``cluster_size`` attention, whose cluster count follows
the input size).
"""
import argparse
import importlib
import importlib.util
import inspect
import os
import os.path as osp
import sys
import warnings
from typing import List, Sequence, Tuple

from mmengine.config import DictAction  # light: no torch

EXPORTERS = ('torchscript', 'dynamo')
# SDPA has an ONNX translation from opset 14 (TorchScript exporter); the dynamo exporter
# writes opset 18 or newer.
MIN_OPSET = {'torchscript': 14, 'dynamo': 18}
DEFAULT_OPSET = {'torchscript': 17, 'dynamo': 18}
SCOPES = ('mmpretrain', 'mmdet', 'mmseg')
# torch.export specialises a stride-32 map of size 1, so dynamic sizes start above 32.
DYNAMO_MIN_SIZE = 33


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Export a SECViT classifier or backbone to ONNX (checked with ONNX '
        'Runtime with --verify)')
    parser.add_argument('config', help='mmpretrain, mmdet or mmseg config file')
    parser.add_argument('checkpoint', help='checkpoint file with the weights to export')
    parser.add_argument(
        '--shape', type=int, nargs=2, required=True, metavar=('H', 'W'),
        help='input height and width of the traced example (and of the graph without '
        '--dynamic)')
    parser.add_argument(
        '--dynamic', action='store_true',
        help='make batch, height and width dynamic: one file for every input size')
    parser.add_argument('--out', help='output .onnx file; defaults to '
                        'work_dirs/<config name>/<config name>[_backbone].onnx')
    parser.add_argument(
        '--opset', type=int, default=None,
        help=f'ONNX opset; defaults to {DEFAULT_OPSET["torchscript"]} (torchscript) or '
        f'{DEFAULT_OPSET["dynamo"]} (dynamo)')
    parser.add_argument('--exporter', choices=EXPORTERS, default='torchscript',
                        help='torch.onnx exporter (default: torchscript)')
    parser.add_argument('--backbone', action='store_true',
                        help='export only the backbone of a classifier config')
    parser.add_argument('--verify', action='store_true',
                        help='compare ONNX Runtime with PyTorch on random inputs')
    parser.add_argument(
        '--verify-shape', type=int, nargs=2, action='append', metavar=('H', 'W'),
        help='further input sizes checked by --verify (only with --dynamic); repeatable')
    parser.add_argument(
        '--verify-image', help='check on this image instead of random inputs (resized to '
        'every checked size, normalised by the config\'s data preprocessor)')
    parser.add_argument('--atol', type=float, default=1e-4,
                        help='largest absolute difference --verify accepts (default 1e-4)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, e.g. model.backbone.out_indices="(0,1,2,3)"')
    return parser


if __name__ == '__main__':
    build_parser().parse_args()  # --help and bad arguments answer before the imports below

import mmcv  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.model import revert_sync_batchnorm  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402
from mmengine.runner.checkpoint import CheckpointLoader  # noqa: E402

from sec_mm.checkpoint import (CheckpointMismatchError,  # noqa: E402
                               check_state_dict_fits, extract_state_dict)


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject bad arguments with a message naming the argument, the value and the fix."""
    for name, path in (('CONFIG', args.config), ('CHECKPOINT', args.checkpoint)):
        if not osp.isfile(path):
            parser.error(f'{name} {path!r} does not exist or is not a file: give the path of an '
                         f'existing {"config" if name == "CONFIG" else "checkpoint"} file.')
    height, width = args.shape
    if height < 1 or width < 1:
        parser.error(f'--shape {height} {width}: height and width must be positive pixel '
                     'counts, e.g. --shape 224 224.')
    if args.dynamic and args.exporter == 'dynamo' and min(height, width) < DYNAMO_MIN_SIZE:
        parser.error(f'--shape {height} {width} with --dynamic --exporter dynamo: both sides '
                     f'must be at least {DYNAMO_MIN_SIZE} (torch.export fixes a 1-pixel '
                     'stride-32 map); trace with a larger example, e.g. --shape 224 224.')
    opset = args.opset if args.opset is not None else DEFAULT_OPSET[args.exporter]
    if opset < MIN_OPSET[args.exporter]:
        parser.error(f'--opset {opset}: the {args.exporter} exporter needs opset '
                     f'{MIN_OPSET[args.exporter]} or newer for this model; drop --opset for '
                     f'the default {DEFAULT_OPSET[args.exporter]}.')
    args.opset = opset
    if args.verify_shape and not args.dynamic:
        parser.error('--verify-shape needs --dynamic: without it the graph accepts only '
                     f'--shape {height} {width}.')
    for h, w in args.verify_shape or []:
        if h < 1 or w < 1:
            parser.error(f'--verify-shape {h} {w}: sizes must be positive.')
    if args.verify_image and not osp.isfile(args.verify_image):
        parser.error(f'--verify-image {args.verify_image!r} does not exist or is not a file.')
    if args.atol <= 0:
        parser.error(f'--atol {args.atol}: must be positive, e.g. --atol 1e-4.')
    if args.verify and importlib.util.find_spec('onnxruntime') is None:
        parser.error('--verify needs onnxruntime: pip install -e ".[onnx]" (or drop --verify).')
    if args.exporter == 'dynamo':
        if 'dynamo' not in inspect.signature(torch.onnx.export).parameters:
            parser.error(f'--exporter dynamo needs torch >= 2.5 (this is {torch.__version__}); '
                         'use --exporter torchscript.')
        if importlib.util.find_spec('onnxscript') is None:
            parser.error('--exporter dynamo needs onnxscript: pip install -e ".[onnx]" (or use '
                         '--exporter torchscript).')


def build_model(cfg: Config, backbone_only: bool) -> Tuple[torch.nn.Module, str]:
    """The module to export (in eval mode) and what it is (``'classifier'``/``'backbone'``)."""
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise ValueError(f'The config has default_scope={scope!r}; pytorch2onnx.py handles '
                         f'configs of {list(SCOPES)}.')
    registry = importlib.import_module(f'{scope}.registry').MODELS
    kind = 'classifier' if scope == 'mmpretrain' and not backbone_only else 'backbone'
    if kind == 'backbone' and 'backbone' not in cfg.model:
        raise ValueError(f'The config\'s model ({cfg.model.get("type")}) has no `backbone` '
                         'to export.')
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(cfg.model if kind == 'classifier' else cfg.model.backbone)
    if kind == 'classifier':
        from mmpretrain.models import ImageClassifier
        if not isinstance(model, ImageClassifier):
            raise ValueError(f'pytorch2onnx.py exports image classifiers; the config builds a '
                             f'{type(model).__name__}. Pass --backbone to export its backbone.')
    # SyncBN has no export path and needs a process group; in eval mode BN is the same.
    return revert_sync_batchnorm(model).eval(), kind


def load_weights(model: torch.nn.Module, checkpoint: str, kind: str) -> None:
    """Load ``checkpoint`` strictly; a backbone takes the ``backbone.`` keys of a whole-model
    file, or a bare backbone state dict as it is."""
    state = extract_state_dict(CheckpointLoader.load_checkpoint(checkpoint, 'cpu'))
    if kind == 'backbone' and any(key.startswith('backbone.') for key in state):
        state = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_state_dict_fits(expected, state, what=f'the {kind} of the config ({checkpoint})')
    model.load_state_dict(state)


def output_names(model: torch.nn.Module, kind: str) -> List[str]:
    if kind == 'classifier':
        return ['logits']
    indices = getattr(model, 'out_indices', None)
    if indices is None:
        raise ValueError(f'{type(model).__name__} has no `out_indices`; pytorch2onnx.py '
                         'exports backbones that return the feature maps of chosen stages.')
    return [f'feat{i}' for i in indices]


def example_input(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, height, width, generator=generator)


def image_input(path: str, cfg: Config, batch: int, height: int,
                width: int) -> torch.Tensor:
    """``path`` resized to ``height x width`` and normalised with the mean, std and channel
    order of the config's data preprocessor, repeated ``batch`` times."""
    preprocessor = cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
    image = mmcv.imread(path)  # BGR
    if image is None:
        raise ValueError(f'--verify-image {path!r} could not be read as an image.')
    if preprocessor.get('to_rgb', preprocessor.get('bgr_to_rgb', False)):
        image = mmcv.bgr2rgb(image)
    image = mmcv.imresize(image, (width, height)).astype(np.float32)
    mean = np.array(preprocessor.get('mean', [0., 0., 0.]), np.float32)
    std = np.array(preprocessor.get('std', [1., 1., 1.]), np.float32)
    x = torch.from_numpy(((image - mean) / std).transpose(2, 0, 1).copy())
    return x.unsqueeze(0).repeat(batch, 1, 1, 1)


def export(model: torch.nn.Module, example: torch.Tensor, out: str, names: List[str],
           exporter: str, opset: int, dynamic: bool) -> None:
    kwargs = dict(input_names=['input'], output_names=names, opset_version=opset)
    if exporter == 'dynamo':
        if dynamic:
            dims = (torch.export.Dim('batch', min=1),
                    torch.export.Dim('height', min=DYNAMO_MIN_SIZE),
                    torch.export.Dim('width', min=DYNAMO_MIN_SIZE))
            kwargs['dynamic_shapes'] = ({0: dims[0], 2: dims[1], 3: dims[2]}, )
        torch.onnx.export(model, (example, ), out, dynamo=True, **kwargs)
        return
    if dynamic:
        axes = {0: 'batch', 2: 'height', 3: 'width'}
        kwargs['dynamic_axes'] = {'input': axes, **{name: {0: 'batch'} for name in names}}
    if 'dynamo' in inspect.signature(torch.onnx.export).parameters:
        kwargs['dynamo'] = False
    with warnings.catch_warnings():
        # Shape reads in the traced code warn one by one; --verify is the real check.
        warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
        warnings.filterwarnings('ignore', message='.*legacy TorchScript-based ONNX export.*')
        torch.onnx.export(model, (example, ), out, **kwargs)


def verify(model: torch.nn.Module, out: str, names: List[str], inputs: Sequence[torch.Tensor],
           atol: float) -> bool:
    """Compare ONNX Runtime with PyTorch on every input; print each result."""
    import onnxruntime
    session = onnxruntime.InferenceSession(out, providers=['CPUExecutionProvider'])
    passed = True
    for x in inputs:
        batch, _, height, width = x.shape
        with torch.no_grad():
            expected = model(x)
        expected = [expected] if torch.is_tensor(expected) else list(expected)
        got = session.run(names, {'input': x.numpy()})
        diffs = [float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected)]
        worst, scale = max(diffs), max(float(e.abs().max()) for e in expected)
        ok = worst <= atol and all(g.shape == tuple(e.shape) for g, e in zip(got, expected))
        passed &= ok
        detail = ', '.join(f'{name} {diff:.1e}' for name, diff in zip(names, diffs))
        print(f'ONNX Runtime vs PyTorch at {batch}x3x{height}x{width}: max abs diff '
              f'{worst:.2e} ({detail}; outputs up to {scale:.3g}) -> '
              f'{"OK" if ok else f"FAILED (atol {atol:g})"}')
    return passed


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        model, kind = build_model(cfg, args.backbone)
        load_weights(model, args.checkpoint, kind)
        names = output_names(model, kind)
    except (CheckpointMismatchError, ValueError) as error:
        parser.error(str(error))
    if args.dynamic and args.exporter == 'torchscript' and any(
            getattr(module, 'cluster_size', None) is not None for module in model.modules()):
        # The cluster count ceil(L / cluster_size) is a Python integer: a TorchScript trace
        # records the traced size's count, wrong at other sizes.
        parser.error('--dynamic with --exporter torchscript cannot export `cluster_size` '
                     'attention (the cluster count changes with the input size and the trace '
                     'would fix it): use --exporter dynamo, or drop --dynamic.')

    stem = osp.splitext(osp.basename(args.config))[0]
    out = args.out or osp.join('work_dirs', stem,
                               stem + ('_backbone' if kind == 'backbone' else '') + '.onnx')
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    height, width = args.shape
    # Batch 2 when dynamic: an exporter may fix a batch of 1 into the graph.
    batch = 2 if args.dynamic else 1
    with torch.no_grad():
        export(model, example_input(batch, height, width), out, names, args.exporter,
               args.opset, args.dynamic)
    size = ('batch x 3 x height x width' if args.dynamic else f'1 x 3 x {height} x {width}')
    print(f'Exported the {kind} of {args.config} to {out} ({args.exporter} exporter, opset '
          f'{args.opset}): input ({size}) -> {", ".join(names)}')
    if importlib.util.find_spec('onnx') is not None:
        import onnx
        onnx.checker.check_model(out)

    if not args.verify:
        return 0
    shapes = [(height, width)]
    if args.dynamic:
        shapes += [tuple(s) for s in args.verify_shape] if args.verify_shape else \
            [(height + 16, width + 24)]
    try:
        inputs = [image_input(args.verify_image, cfg, batch, h, w) if args.verify_image else
                  example_input(batch, h, w, seed) for seed, (h, w) in enumerate(shapes, 1)]
    except ValueError as error:
        parser.error(str(error))
    if verify(model, out, names, inputs, args.atol):
        return 0
    print('SEC attention clusters tokens by a hard sort: a token whose similarity lies within '
          'float rounding of a cluster boundary may land in the neighbouring cluster in '
          'another runtime, and the difference then grows through later layers. If only '
          'random inputs fail, check real images with --verify-image.')
    return 1


if __name__ == '__main__':
    sys.exit(main())
