"""FLOPs and parameters of an mmpretrain, mmdet or mmseg model built from a config.

    python tools/analysis_tools/get_flops.py CONFIG [--shape H [W]] [--show-table]

Counts one multiply-add as one FLOP (fvcore/mmengine convention) with mmengine's jit analysis,
plus the matrix products of attention (``q k^T`` and ``attn v`` inside every SEC cluster) that
the stock counters skip; the count without them is printed too, for comparison with papers.
The model runs once in eval mode on a random image, through its own data preprocessor, in
``mode='tensor'`` (detectors: backbone, neck, RPN and RoI heads on the RPN's proposals).
"""
import argparse
import importlib

from mmengine.config import DictAction  # light: no torch


def parse_args():
    parser = argparse.ArgumentParser(
        description='FLOPs (including SEC attention) and parameters of a model')
    parser.add_argument('config', help='config file of an mmpretrain/mmdet/mmseg model')
    parser.add_argument(
        '--shape', type=int, nargs='+', default=None, metavar='SIZE',
        help='input size "H W" or "S" for SxS; defaults to 224x224 (mmpretrain), 1280x800 '
        '(mmdet), 512x2048 (mmseg)')
    parser.add_argument(
        '--show-table', action='store_true', help='print FLOPs and parameters per module')
    parser.add_argument(
        '--max-depth', type=int, default=3, help='module depth of --show-table')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, e.g. model.backbone.num_clusters="(16,4,1,-1)"')
    return parser.parse_args()


if __name__ == '__main__':
    parse_args()  # --help and bad arguments answer before the heavy imports below

from mmengine.analysis.print_helper import complexity_stats_table  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.model import revert_sync_batchnorm  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402

from sec_mm.utils.flops import model_complexity  # noqa: E402

# The papers' sizes: 224 classification, 1280x800 detection, 512x2048 segmentation.
DEFAULT_SHAPES = {'mmpretrain': (224, 224), 'mmdet': (1280, 800), 'mmseg': (512, 2048)}


def input_size(shape, scope):
    if shape is None:
        return DEFAULT_SHAPES[scope]
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return tuple(shape)
    raise ValueError(f'--shape takes one or two numbers (H W), got {shape}.')


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    scope = cfg.get('default_scope')
    if scope not in DEFAULT_SHAPES:
        raise ValueError(f'{args.config} has default_scope={scope!r}; get_flops.py handles '
                         f'configs of {sorted(DEFAULT_SHAPES)}.')
    height, width = input_size(args.shape, scope)

    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        # Built but never initialised: random weights, no checkpoint needed.
        model = revert_sync_batchnorm(registry.build(cfg.model))
        result = model_complexity(model, height, width)

    if args.show_table:
        print(complexity_stats_table(result.analyzer, max_depth=args.max_depth,
                                     show_param_shapes=False))
    padded = ('' if result.input_shape == (height, width) else
              f' (padded to {result.input_shape[0]}x{result.input_shape[1]})')
    line = '=' * 60
    print(f'{line}\n'
          f'Config:        {args.config}\n'
          f'Input shape:   {height}x{width}{padded}\n'
          f'FLOPs:         {result.flops / 1e9:.2f} G (multiply-adds, with attention)\n'
          f'  attention:   {result.attention_flops / 1e9:.2f} G (q k^T and attn v)\n'
          f'  without:     {result.flops_without_attention / 1e9:.2f} G (stock counter)\n'
          f'Params:        {result.params / 1e6:.2f} M (whole model)\n'
          f'{line}')


if __name__ == '__main__':
    main()
