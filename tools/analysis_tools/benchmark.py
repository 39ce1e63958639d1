"""SECViT against Swin-T on a GPU or a CPU, every model built from its config, in one run.

Tables (``--tables``, default ``classifiers dense``):

- ``classifiers``: SECViT-T and SECViT-S (``configs/classification/secvit``) against
  mmpretrain's Swin-T (``swin-tiny_16xb64_in1k``) at ``--image-size``: inference images/s and
  a training step (forward, cross-entropy, backward, AdamW), with peak memory. The papers time
  inference at batch 64 on an A100: SECViT-T 2004 images/s, Swin-T 1723 (1.16x).
- ``dense``: backbone forward+backward in train mode (backward from random gradients of the
  four outputs, what a neck would send back) and peak memory at ``--dense-shapes`` (default
  2x512x512, 1x800x1344 and 1x1024x1024) for the SECViT-T backbone of
  ``mask-rcnn_secvit-t_fpn_1x_coco.py`` with the papers' clusters (32, 8, 2, global at every
  size), the same with ``cluster_size=98`` (tokens per cluster of 224x224: cost linear in the
  image area) and the Swin-T backbone of mmdet's ``mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py``
  (mmpretrain's identical Swin-T with those settings where mmdet's models cannot be imported,
  e.g. beside mmcv without compiled ops).
- ``compile``: the ``--compile`` models eager against ``torch.compile`` (inductor), in turns:
  classifier inference at ``--image-size`` and backbone forward+backward at the first dense
  shape, with the first compiled call's seconds (compilation).

"speed vs Swin-T" is Swin-T's time over the model's (above 1: faster); "memory / Swin-T" is
the model's peak memory over Swin-T's (below 1: less memory). Timing and memory come from
``benchmarks/harness.py``: warm-up first, the models of a table in turns, medians, CUDA
synchronised. The tables are printed; ``--out benchmarks/results.md`` also writes them into
that file as a section per device, precision and memory format (a rerun replaces it).

Examples::

    python tools/analysis_tools/benchmark.py --device cpu --threads 2
    python tools/analysis_tools/benchmark.py --device cuda --amp bf16 --out benchmarks/results.md
    python tools/analysis_tools/benchmark.py --tables compile --compile SECViT-T Swin-T
"""
import argparse
import contextlib
import importlib
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
CLASSIFIERS = {
    'SECViT-T': 'configs/classification/secvit/secvit-t_8xb128_in1k.py',
    'SECViT-S': 'configs/classification/secvit/secvit-s_8xb128_in1k.py',
    'Swin-T': 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py',
}
SECVIT_DENSE = 'configs/detection/secvit/mask-rcnn_secvit-t_fpn_1x_coco.py'
DENSE = {  # name: (config, backbone settings changed, stage-1 groups: SEC clusters or windows)
    'SECViT-T': (SECVIT_DENSE, {}, dict(num_clusters=32)),
    'SECViT-T cluster_size=98': (SECVIT_DENSE, dict(num_clusters=None, cluster_size=98),
                                 dict(cluster_size=98)),
    'Swin-T': ('mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', {}, 7 * 7),
}
REFERENCE = 'Swin-T'
TABLES = ('classifiers', 'dense', 'compile')
# Swin-T's 7x7 windows and stride-32 last stage: smaller sides give maps smaller than a window.
MIN_SIDE = 224
DEFAULTS = {'cuda': dict(batch=64, warmup=10, iters=30), 'cpu': dict(batch=4, warmup=1, iters=5)}
DENSE_SHAPES = ['2x512x512', '1x800x1344', '1x1024x1024']
from benchmarks.harness import (add_output_arguments, device_name,  # noqa: E402
                                environment_lines, markdown_table, peak_memory_mib, print_row,
                                synchronize, time_in_turns, write_section)

PAPERS = 'papers (A100, batch 64, 224x224): SECViT-T 2004 images/s, Swin-T 1723 (1.16x)'


def parse_shape(text: str) -> Tuple[int, int, int]:
    """``BxHxW`` or ``Bx3xHxW`` -> ``(B, H, W)``."""
    try:
        numbers = [int(part) for part in text.lower().split('x')]
    except ValueError:
        numbers = []
    if len(numbers) == 4 and numbers[1] == 3:
        numbers = [numbers[0]] + numbers[2:]
    if len(numbers) != 3 or min(numbers) < 1:
        raise argparse.ArgumentTypeError(
            f'{text!r} is not a shape: give BxHxW or Bx3xHxW, e.g. 2x800x1344')
    return tuple(numbers)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='auto',
                        help='default: cuda when available, else cpu')
    parser.add_argument('--amp', choices=['bf16', 'fp16'],
                        help='run the models under autocast to this type (default: float32)')
    parser.add_argument('--tf32', choices=['on', 'off'],
                        help="CUDA float32: TF32 in matmuls and cuDNN (default: torch's)")
    parser.add_argument('--channels-last', action='store_true',
                        help='models and inputs in channels-last memory format')
    parser.add_argument('--tables', nargs='+', choices=TABLES,
                        default=['classifiers', 'dense'], help='default: classifiers dense')
    parser.add_argument('--batch', type=int, help='classifier batch (default: 64 on cuda, '
                        '4 on cpu)')
    parser.add_argument('--image-size', type=int, default=224,
                        help=f'classifier input side (at least {MIN_SIDE}; default 224)')
    parser.add_argument('--dense-shapes', nargs='*', type=parse_shape, metavar='BxHxW',
                        help=f'backbone inputs (default: {" ".join(DENSE_SHAPES)})')
    parser.add_argument('--compile', nargs='+', choices=['SECViT-T', 'Swin-T'],
                        default=['SECViT-T'], help='models of the compile table')
    parser.add_argument('--warmup', type=int,
                        help='untimed iterations first (default: 10 on cuda, 1 on cpu)')
    parser.add_argument('--iters', type=int,
                        help='timed iterations (default: 30 on cuda, 5 on cpu)')
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)

    if args.tf32 is not None and args.device == 'cpu':
        parser.error(f'--tf32 {args.tf32}: TF32 is a CUDA setting; leave it out with '
                     '--device cpu.')
    for name in ('batch', 'iters', 'threads'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name} {value}: must be at least 1.')
    if args.warmup is not None and args.warmup < 0:
        parser.error(f'--warmup {args.warmup}: must be 0 or more.')
    if args.dense_shapes is None:
        args.dense_shapes = [parse_shape(shape) for shape in DENSE_SHAPES]
    if 'compile' in args.tables and not args.dense_shapes:
        parser.error('--tables compile times a backbone at the first --dense-shapes entry; '
                     'give one.')
    sides = [('--image-size', args.image_size)] + [
        ('--dense-shapes', side) for _, height, width in args.dense_shapes
        for side in (height, width)]
    for option, side in sides:
        if side < MIN_SIDE:
            parser.error(f'{option}: a side of {side} px is below {MIN_SIDE}, where '
                         "Swin-T's last stage would be smaller than its 7x7 window; use "
                         f'sides of at least {MIN_SIDE}.')

    import torch  # after the checks above: --help and bad arguments answer at once
    if args.device == 'auto':
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: torch sees no CUDA device here (torch '
                     f'{torch.__version__}, built for CUDA {torch.version.cuda}); use '
                     '--device cpu, or a torch build that matches the driver.')
    for name, value in DEFAULTS[args.device].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args

if __name__ == '__main__':
    parse_args()  # --help and bad arguments answer before the heavy imports below

import torch  # noqa: E402

import sec_mm  # noqa: E402,F401  (registers the SEC models)
from sec_mm.ops import resolve_num_clusters  # noqa: E402


def load_config(path: str):
    """A config of this repository or, as ``package::path``, one an OpenMMLab package ships."""
    from mmengine.config import Config
    if '::' in path:
        package, relative = path.split('::', 1)
        folder = Path(importlib.import_module(package).__file__).parent / '.mim' / 'configs'
        return Config.fromfile(folder / relative)
    return Config.fromfile(ROOT / path)


def build(cfg: dict, scope: str = 'mmpretrain'):
    registry = importlib.import_module(f'{scope}.registry').MODELS
    if scope == 'mmdet':
        importlib.import_module('mmdet.models')  # needs mmcv's compiled ops
    return registry.build(cfg)


def dense_backbone(name: str):
    """``(backbone, label)``; Swin-T falls back to mmpretrain's where mmdet's cannot load."""
    path, changes, _ = DENSE[name]
    cfg = load_config(path).model.backbone
    cfg.update(init_cfg=None, **changes)  # speed does not depend on the weights
    if cfg.type != 'SwinTransformer':
        return build(cfg), name
    try:
        return build(cfg, 'mmdet'), name
    except ImportError as error:
        print(f"  mmdet's Swin-T cannot be imported ({error}): mmpretrain's Swin-T with "
              "mmdet's Swin-T Mask R-CNN settings instead", flush=True)
        cfg = load_config(CLASSIFIERS['Swin-T']).model.backbone
        cfg.update(out_indices=(0, 1, 2, 3), drop_path_rate=0.2)
        return build(cfg), f'{name} (mmpretrain)'


class Runner:
    """Device, precision and memory format of one run, and the steps it times."""

    def __init__(self, args) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.amp_dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(args.amp)
        self.memory_format = (torch.channels_last if args.channels_last else
                              torch.contiguous_format)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def prepare(self, model):
        return model.to(self.device, memory_format=self.memory_format)

    def images(self, batch: int, height: int, width: int):
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(batch, 3, height, width, generator=generator)
        return images.to(self.device).contiguous(memory_format=self.memory_format)

    def inference_step(self, model, images):
        def step():
            model.eval()
            with torch.no_grad(), self.autocast():
                model(images, mode='tensor')
        return step

    def train_step(self, model, images):
        """Forward, cross-entropy on random labels, backward and an AdamW step."""
        labels = torch.randint(0, 1000, (len(images), ), device=self.device,
                               generator=torch.Generator(self.device).manual_seed(0))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            model.train()
            with self.autocast():
                logits = model(images, mode='tensor')
            torch.nn.functional.cross_entropy(logits.float(), labels).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return step

    def backbone_step(self, backbone, images):
        """Forward and backward of a backbone in train mode, from random output gradients."""
        backbone.train()
        with torch.no_grad(), self.autocast():
            grads = [torch.randn_like(out) for out in backbone(images)]

        def step():
            backbone.zero_grad(set_to_none=True)
            with self.autocast():
                outs = backbone(images)
            torch.autograd.backward(outs, grads)
        return step

    def time(self, steps):
        return time_in_turns(steps, self.device, self.args.iters, self.args.warmup)

    def peak(self, step, module=None):
        if module is not None:  # the peak then counts the step's new gradients alike
            module.zero_grad(set_to_none=True)
        return peak_memory_mib(step, self.device)


def params_m(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def bench_classifiers(run: Runner) -> List[dict]:
    args = run.args
    images = run.images(args.batch, args.image_size, args.image_size)
    models = {}
    for name, path in CLASSIFIERS.items():
        torch.manual_seed(0)
        models[name] = run.prepare(build(load_config(path).model))
    infer = {name: run.inference_step(model, images) for name, model in models.items()}
    train = {name: run.train_step(model, images) for name, model in models.items()}
    infer_s, train_s = run.time(infer), run.time(train)
    rows = []
    for name, model in models.items():
        ms = infer_s[name].median * 1e3
        rows.append(dict(
            model=name, config=CLASSIFIERS[name], params_m=params_m(model), ms=ms,
            images_per_s=args.batch * 1e3 / ms,
            speed_vs_swin=infer_s[REFERENCE].median * 1e3 / ms,
            peak_mib=run.peak(infer[name]), train_ms=train_s[name].median * 1e3,
            train_speed_vs_swin=train_s[REFERENCE].median / train_s[name].median,
            train_peak_mib=run.peak(train[name], model)))
        print_row(rows[-1], CLASSIFIER_COLUMNS[:1] + CLASSIFIER_COLUMNS[2:])
    return rows


def stage1_group(name: str, height: int, width: int) -> int:
    """Tokens that attend together in stage 1 (stride 4): a SEC cluster or a Swin window."""
    group = DENSE[name.split(' (')[0]][2]
    if isinstance(group, int):
        return group
    tokens = -(-height // 4) * -(-width // 4)
    return -(-tokens // resolve_num_clusters(tokens, **group))


def bench_dense(run: Runner) -> List[dict]:
    backbones = {}
    for name in DENSE:
        torch.manual_seed(0)
        backbone, label = dense_backbone(name)
        backbones[label] = run.prepare(backbone)
    reference = next(label for label in backbones if label.startswith(REFERENCE))
    rows = []
    for batch, height, width in run.args.dense_shapes:
        images = run.images(batch, height, width)
        steps = {label: run.backbone_step(b, images) for label, b in backbones.items()}
        seconds = run.time(steps)
        memory = {label: run.peak(step, backbones[label]) for label, step in steps.items()}
        for label, backbone in backbones.items():
            rows.append(dict(
                input=f'{batch}x3x{height}x{width}', model=label, params_m=params_m(backbone),
                group=stage1_group(label, height, width),
                ms=seconds[label].median * 1e3, images_per_s=batch / seconds[label].median,
                speed_vs_swin=seconds[reference].median / seconds[label].median,
                peak_mib=memory[label], memory_per_swin=memory[label] / memory[reference]))
            print_row(rows[-1], DENSE_COLUMNS)
    return rows


def bench_compile(run: Runner) -> List[dict]:
    """Eager against ``torch.compile`` (default inductor backend) at fixed sizes."""
    args, rows = run.args, []
    batch, height, width = args.dense_shapes[0]
    for name in args.compile:
        torch.manual_seed(0)
        classifier = run.prepare(build(load_config(CLASSIFIERS[name]).model))
        torch.manual_seed(0)
        backbone = run.prepare(dense_backbone(name)[0])
        side = args.image_size
        cases = [(f'classifier inference {args.batch}x3x{side}x{side}', classifier,
                  run.inference_step, run.images(args.batch, side, side)),
                 (f'backbone fwd+bwd {batch}x3x{height}x{width}', backbone, run.backbone_step,
                  run.images(batch, height, width))]
        for case, model, make_step, images in cases:
            eager = make_step(model, images)
            compiled = make_step(torch.compile(model), images)
            start = time.perf_counter()
            compiled()  # compiles
            synchronize(run.device)
            first_s = time.perf_counter() - start
            seconds = run.time({'eager': eager, 'compiled': compiled})
            rows.append(dict(model=name, case=case, eager_ms=seconds['eager'].median * 1e3,
                             compiled_ms=seconds['compiled'].median * 1e3,
                             speedup=seconds['eager'].median / seconds['compiled'].median,
                             first_s=first_s))
            print_row(rows[-1], COMPILE_COLUMNS)
    return rows


CLASSIFIER_COLUMNS = [
    ('model', 'model', '{}'), ('config', 'config', '`{}`'), ('params_m', 'params (M)', '{:.1f}'),
    ('ms', 'ms / batch', '{:.2f}'), ('images_per_s', 'images/s', '{:.2f}'),
    ('speed_vs_swin', 'speed vs Swin-T', '{:.2f}x'), ('peak_mib', 'peak MiB', '{:.0f}'),
    ('train_ms', 'train step ms', '{:.1f}'),
    ('train_speed_vs_swin', 'train speed vs Swin-T', '{:.2f}x'),
    ('train_peak_mib', 'train peak MiB', '{:.0f}')]
DENSE_COLUMNS = [
    ('input', 'input', '{}'), ('model', 'backbone', '{}'), ('params_m', 'params (M)', '{:.1f}'),
    ('group', 'stage-1 tokens / group', '{}'), ('ms', 'fwd+bwd ms', '{:.1f}'),
    ('images_per_s', 'images/s', '{:.2f}'),
    ('speed_vs_swin', 'speed vs Swin-T', '{:.2f}x'), ('peak_mib', 'peak MiB', '{:.0f}'),
    ('memory_per_swin', 'memory / Swin-T', '{:.2f}x')]
COMPILE_COLUMNS = [
    ('model', 'model', '{}'), ('case', 'step', '{}'), ('eager_ms', 'eager ms', '{:.1f}'),
    ('compiled_ms', 'compiled ms', '{:.1f}'), ('speedup', 'compiled speed-up', '{:.2f}x'),
    ('first_s', 'first compiled call s', '{:.1f}')]


def precision_name(run: Runner) -> str:
    if run.amp_dtype is not None:
        return f'autocast {str(run.amp_dtype).replace("torch.", "")}'
    if run.device.type == 'cuda':
        matmul = 'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'
        conv = 'on' if torch.backends.cudnn.allow_tf32 else 'off'
        return f'float32 (TF32 matmul {matmul}, cuDNN conv {conv})'
    return 'float32'


def section_key(run: Runner) -> str:
    layout = 'channels-last' if run.args.channels_last else 'NCHW'
    return f'{device_name(run.device)}, {precision_name(run)}, {layout}'


def header(run: Runner) -> List[str]:
    args = run.args
    return environment_lines(run.device, 'tools/analysis_tools/benchmark.py', args.argv) + [
        f'- dtype: {precision_name(run)}; memory format: '
        f'{"channels-last" if args.channels_last else "NCHW"}'
        + ('; cudnn.benchmark on' if run.device.type == 'cuda' else ''),
        f'- timing: median of {args.iters} iterations after {args.warmup} warm-up '
        'iterations, the models of a table in turns'
        + ('; every iteration synchronised' if run.device.type == 'cuda' else ''),
        '- peak memory: most memory allocated during one iteration beyond what was allocated '
        'before it (' + ('`torch.cuda.max_memory_allocated`' if run.device.type == 'cuda' else
                         "the CPU allocator's events recorded by `torch.profiler`") + ')']


def render(run: Runner, results: Dict[str, List[dict]]) -> str:
    args = run.args
    parts = [f'## SECViT vs Swin-T: {section_key(run)} (benchmark.py)', '', *header(run), '']
    if results.get('classifiers'):
        parts += [f'### Classifiers, {args.batch}x3x{args.image_size}x{args.image_size}', '',
                  'Inference: `model(images, mode="tensor")` in eval mode under '
                  '`torch.no_grad()`; train step: forward, cross-entropy, backward, AdamW.', '',
                  markdown_table(results['classifiers'], CLASSIFIER_COLUMNS), '',
                  f'For comparison, the {PAPERS}.', '']
    if results.get('dense'):
        parts += ['### Backbone forward+backward', '',
                  'Train mode; backward from random gradients of the four outputs. '
                  '`cluster_size=98`: SECViT-T with 98 tokens per cluster instead of the '
                  "papers' (32, 8, 2, global) clusters. Swin-T: mmdet's Swin-T Mask R-CNN "
                  'backbone (drop path 0.2). Stage-1 tokens / group: the tokens that attend '
                  'together at stride 4 (a SEC cluster, a Swin window).', '',
                  markdown_table(results['dense'], DENSE_COLUMNS), '']
    if results.get('compile'):
        parts += ['### torch.compile (inductor) against eager', '',
                  'The same step eager and compiled in turns, at fixed sizes; the first '
                  'compiled call includes compilation.', '',
                  markdown_table(results['compile'], COMPILE_COLUMNS), '']
    return '\n'.join(parts)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    run = Runner(args)
    if run.device.type == 'cuda':
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick kernels
        if args.tf32 is not None:
            torch.backends.cuda.matmul.allow_tf32 = args.tf32 == 'on'
            torch.backends.cudnn.allow_tf32 = args.tf32 == 'on'
    print('\n'.join(header(run)), flush=True)
    benches = dict(classifiers=bench_classifiers, dense=bench_dense, compile=bench_compile)
    results = {}
    for table in args.tables:
        print(f'{table}:', flush=True)
        results[table] = benches[table](run)
    section = render(run, results)
    print(section, flush=True)
    key = section_key(run)
    if args.out:  # one section per device, precision, layout and choice of tables
        tables = '' if args.tables == ['classifiers', 'dense'] else f' ({" ".join(args.tables)})'
        write_section(args.out, f'benchmark.py [{key}]{tables}', section)
        print(f'Written to {args.out}', flush=True)
    return dict(results, section=section, key=key)


if __name__ == '__main__':
    main()
