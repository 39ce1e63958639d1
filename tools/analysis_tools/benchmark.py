"""Benchmark SECViT against Swin-T on a GPU or a CPU: classifier throughput and dense training.

One run measures two tables, every model built from its config:

1. **Classifier inference** at 224x224 (images/s): SECViT-T and SECViT-S
   (``configs/classification/secvit``) against mmpretrain's Swin-T
   (``mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py``). The papers time batch 64 on a
   GPU (A100: SECViT-T 2004 images/s, Swin-T 1723, i.e. 1.16x).
2. **Backbone forward+backward** at dense-prediction sizes (2x3x800x1344 and 2x3x512x512 on a
   GPU): the SECViT-T backbone of ``configs/detection/secvit/mask-rcnn_secvit-t_fpn_1x_coco.py``
   against mmpretrain's Swin-T backbone set up as mmdet's Swin-T Mask R-CNN sets up its own
   (four outputs, drop path 0.2). mmpretrain's Swin is the same architecture as mmdet's and
   needs no compiled mmcv ops, so this runs with mmcv-lite too.

Timing: ``--warmup`` untimed iterations, then ``--iters`` timed ones of which the median is
reported; the models of one table take turns iteration by iteration, so load from other
processes hits them alike. On CUDA every timed iteration is synchronised and
``cudnn.benchmark`` is on. Peak memory is the most memory allocated during one iteration
beyond what was allocated before it (so weights and inputs are not counted; gradients and
activations are): ``torch.cuda.max_memory_allocated`` on CUDA, the CPU allocator's events
recorded by ``torch.profiler`` on CPU (the resident size would also count freed memory that
glibc keeps). "vs Swin-T" columns are Swin-T's time (or memory) over the model's, from the same
run: above 1 means faster (or smaller).

On CPU the defaults are smaller, so that a run takes minutes: batch 4 at 224, dense inputs
1x3x512x512 and 1x3x320x544, 1 warm-up and 5 timed iterations (GPU: batch 64, 2x3x800x1344
and 2x3x512x512, 10 warm-up and 30 timed iterations).

The tables are printed and written to ``--out`` (default ``benchmarks/results.md``) as a
section of their own per device, precision and memory format: a run with the same settings
replaces its section, other sections of the file are kept.

Examples::

    python tools/analysis_tools/benchmark.py                      # CUDA when available
    python tools/analysis_tools/benchmark.py --device cuda --amp bf16
    python tools/analysis_tools/benchmark.py --device cpu --threads 2
"""
import argparse
import contextlib
import datetime
import importlib
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mmengine.config import Config  # noqa: E402

CLASSIFIERS = {
    'SECViT-T': 'configs/classification/secvit/secvit-t_8xb128_in1k.py',
    'SECViT-S': 'configs/classification/secvit/secvit-s_8xb128_in1k.py',
    'Swin-T': 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py',
}
DENSE_BACKBONES = {
    'SECViT-T': 'configs/detection/secvit/mask-rcnn_secvit-t_fpn_1x_coco.py',
    'Swin-T': 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py',
}
REFERENCE = 'Swin-T'
AMP_DTYPES = {'fp16': torch.float16, 'bf16': torch.bfloat16}
# Swin-T's windows are 7x7 and its last stage has stride 32: smaller inputs give maps smaller
# than a window, which the stock model (pad_small_map=False) cannot take.
MIN_SIDE = 224
DEFAULTS = {
    'cuda': dict(batch=64, dense_shapes=['2x800x1344', '2x512x512'], warmup=10, iters=30),
    'cpu': dict(batch=4, dense_shapes=['1x512x512', '1x320x544'], warmup=1, iters=5),
}
PAPERS = 'papers (A100, batch 64, 224x224): SECViT-T 2004 images/s, Swin-T 1723 (1.16x)'


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------
def load_config(path: str) -> Config:
    """A config from this repository or, as ``package::relative/path.py``, from the configs an
    OpenMMLab package ships in ``<package>/.mim/configs``."""
    if '::' in path:
        package, relative = path.split('::', 1)
        module = importlib.import_module(package)
        return Config.fromfile(Path(module.__file__).parent / '.mim' / 'configs' / relative)
    return Config.fromfile(ROOT / path)


def build_model(cfg: dict) -> nn.Module:
    """Build from mmpretrain's registry, where sec_mm registers its models too."""
    import sec_mm  # noqa: F401  (registers the SEC models)
    from mmpretrain.registry import MODELS
    return MODELS.build(cfg)


def dense_backbone_cfg(path: str) -> dict:
    """The backbone of a dense config, without its pretrained weights (speed does not depend on
    them). Swin-T's classification backbone gets the four outputs of mmdet's Swin Mask R-CNN."""
    cfg = load_config(path).model.backbone
    cfg.init_cfg = None
    if cfg.type == 'SwinTransformer':
        cfg.out_indices = (0, 1, 2, 3)
    return cfg


def count_params(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_in_turns(steps: Dict[str, Callable[[], None]], device: torch.device, warmup: int,
                  iters: int) -> Dict[str, float]:
    """Median seconds per call of every step; the steps run in turns, warm-up first."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times = {name: [] for name in steps}
    for _ in range(iters):
        for name, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_memory_mib(step: Callable[[], None], device: torch.device) -> float:
    """MiB allocated at the peak of one ``step()`` beyond what was allocated before it."""
    if device.type == 'cuda':
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # Replay the allocations and frees in time order; the running sum's maximum is the peak.
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == '[memory]'
                    and e.device_type() == torch.autograd.DeviceType.CPU)
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak / 2**20


class Harness:
    """How one benchmark run runs the models: device, precision and memory format."""

    def __init__(self, device: torch.device, amp: Optional[str], channels_last: bool) -> None:
        self.device = device
        self.amp_dtype = AMP_DTYPES.get(amp)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def prepare(self, model: nn.Module) -> nn.Module:
        return model.to(self.device, memory_format=self.memory_format)

    def images(self, batch: int, height: int, width: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(batch, 3, height, width, generator=generator)
        return images.to(self.device).contiguous(memory_format=self.memory_format)

    def inference_step(self, model: nn.Module, images: torch.Tensor) -> Callable[[], None]:
        model.eval()

        def step():
            with torch.no_grad(), self.autocast():
                model(images, mode='tensor')

        return step

    def train_step(self, backbone: nn.Module, images: torch.Tensor) -> Callable[[], None]:
        """Forward and backward of a backbone in train mode, with random gradients for its
        outputs (what the neck and heads would send back)."""
        backbone.train()
        with torch.no_grad(), self.autocast():
            grads = [torch.randn_like(out) for out in backbone(images)]

        def step():
            backbone.zero_grad(set_to_none=True)
            with self.autocast():
                outs = backbone(images)
            torch.autograd.backward(outs, grads)

        return step


def bench_classifiers(harness: Harness, args) -> List[dict]:
    """Table 1: inference images/s of the classifiers at ``--image-size``."""
    images = harness.images(args.batch, args.image_size, args.image_size)
    models = {}
    for name, path in CLASSIFIERS.items():
        torch.manual_seed(0)
        models[name] = harness.prepare(build_model(load_config(path).model))
    steps = {name: harness.inference_step(model, images) for name, model in models.items()}
    seconds = time_in_turns(steps, harness.device, args.warmup, args.iters)
    rows = []
    for name, model in models.items():
        rows.append(dict(
            model=name, config=CLASSIFIERS[name], params_m=count_params(model),
            ms=seconds[name] * 1e3, images_per_s=args.batch / seconds[name],
            speed_vs_swin=seconds[REFERENCE] / seconds[name],
            peak_mib=peak_memory_mib(steps[name], harness.device)))
        print_row(rows[-1], CLASSIFIER_COLUMNS)
    return rows


def bench_dense(harness: Harness, args) -> List[dict]:
    """Table 2: backbone forward+backward at every ``--dense-shapes`` size."""
    backbones = {}
    for name, path in DENSE_BACKBONES.items():
        torch.manual_seed(0)
        backbones[name] = harness.prepare(build_model(dense_backbone_cfg(path)))
    rows = []
    for batch, height, width in args.dense_shapes:
        images = harness.images(batch, height, width)
        steps = {name: harness.train_step(backbone, images)
                 for name, backbone in backbones.items()}
        seconds = time_in_turns(steps, harness.device, args.warmup, args.iters)
        memory = {}
        for name, step in steps.items():
            # Free the last step's gradients first: the step's peak then counts its new ones
            # alike on CPU and CUDA (the CPU profiler misses frees of earlier allocations).
            backbones[name].zero_grad(set_to_none=True)
            memory[name] = peak_memory_mib(step, harness.device)
        for name, backbone in backbones.items():
            rows.append(dict(
                input=f'{batch}x3x{height}x{width}', model=name,
                config=DENSE_BACKBONES[name], params_m=count_params(backbone),
                ms=seconds[name] * 1e3, images_per_s=batch / seconds[name],
                speed_vs_swin=seconds[REFERENCE] / seconds[name], peak_mib=memory[name],
                memory_vs_swin=memory[REFERENCE] / memory[name]))
            print_row(rows[-1], DENSE_COLUMNS)
    return rows


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------
CLASSIFIER_COLUMNS = [('model', 'model', '{}'), ('config', 'config', '`{}`'),
                      ('params_m', 'params (M)', '{:.1f}'), ('ms', 'ms / batch', '{:.2f}'),
                      ('images_per_s', 'images/s', '{:.2f}'),
                      ('speed_vs_swin', 'speed vs Swin-T', '{:.2f}x'),
                      ('peak_mib', 'peak MiB', '{:.0f}')]
DENSE_COLUMNS = [('input', 'input', '{}'), ('model', 'backbone', '{}'),
                 ('params_m', 'params (M)', '{:.1f}'), ('ms', 'fwd+bwd ms', '{:.1f}'),
                 ('images_per_s', 'images/s', '{:.2f}'),
                 ('speed_vs_swin', 'speed vs Swin-T', '{:.2f}x'),
                 ('peak_mib', 'peak MiB', '{:.0f}'),
                 ('memory_vs_swin', 'memory vs Swin-T', '{:.2f}x')]


def print_row(row: dict, columns) -> None:
    print('  ' + ', '.join(f'{title}: {fmt.format(row[key])}' for key, title, fmt in columns
                           if key != 'config'), flush=True)


def markdown_table(rows: List[dict], columns) -> List[str]:
    lines = ['| ' + ' | '.join(title for _, title, _ in columns) + ' |',
             '|' + '---|' * len(columns)]
    lines += ['| ' + ' | '.join(fmt.format(row[key]) for key, _, fmt in columns) + ' |'
              for row in rows]
    return lines


def device_name(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    return platform.processor() or platform.machine()


def precision_name(harness: Harness) -> str:
    if harness.amp_dtype is not None:
        return f'autocast {str(harness.amp_dtype).replace("torch.", "")}'
    if harness.device.type == 'cuda':
        matmul = 'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'
        conv = 'on' if torch.backends.cudnn.allow_tf32 else 'off'
        return f'float32 (TF32 matmul {matmul}, cuDNN conv {conv})'
    return 'float32'


def section_key(harness: Harness) -> str:
    """What a run replaces in ``--out``: the earlier run on the same device, precision and
    memory format."""
    layout = 'channels-last' if harness.memory_format == torch.channels_last else 'NCHW'
    return f'{device_name(harness.device)}, {precision_name(harness)}, {layout}'


def header(harness: Harness, args, load_end: Optional[float] = None) -> List[str]:
    device = harness.device
    if device.type == 'cuda':
        where = (f'{device_name(device)} (CUDA {torch.version.cuda}, cuDNN '
                 f'{torch.backends.cudnn.version()}, cudnn.benchmark on)')
    else:
        where = f'CPU: {device_name(device)}, {os.cpu_count()} logical CPUs'
    lines = [
        f'- device: {where}',
        f'- torch {torch.__version__}, Python {platform.python_version()}, '
        f'{torch.get_num_threads()} CPU threads',
        f'- dtype: {precision_name(harness)}; memory format: '
        f'{"channels-last" if harness.memory_format == torch.channels_last else "NCHW"}',
        f'- timing: median of {args.iters} iterations after {args.warmup} warm-up '
        'iterations, the models of a table in turns' +
        ('; every iteration synchronised' if device.type == 'cuda' else ''),
        '- peak memory: most memory allocated during one iteration beyond what was allocated '
        'before it (' + ('`torch.cuda.max_memory_allocated`' if device.type == 'cuda' else
                         "the CPU allocator's events recorded by `torch.profiler`") + ')',
        f'- date: {datetime.datetime.now().isoformat(timespec="minutes")}; command: `'
        + shlex.join(['python', 'tools/analysis_tools/benchmark.py', *args.argv]) + '`',
    ]
    if device.type == 'cpu':  # other processes' load slows a CPU run
        lines.append(f'- load average (1 min) at start: {args.load:.2f}' + (
            '' if load_end is None else f', at the end: {load_end:.2f}'))
    if args.cpu_defaults:
        lines.append('- CPU defaults: batch 4 at 224 and smaller dense inputs than the papers\' '
                     'GPU setting (batch 64; 2x800x1344, 2x512x512)')
    return lines


def render(harness: Harness, args, classifier_rows: List[dict],
           dense_rows: List[dict]) -> str:
    key = section_key(harness)
    parts = [begin_marker(key), f'## SECViT vs Swin-T: {key} (benchmark.py)', '']
    parts += header(harness, args, os.getloadavg()[0]) + ['']
    if classifier_rows:
        parts += [f'### Classifier inference, {args.batch}x3x{args.image_size}x'
                  f'{args.image_size}', '',
                  '`model(images, mode="tensor")` in eval mode under `torch.no_grad()`.', '']
        parts += markdown_table(classifier_rows, CLASSIFIER_COLUMNS)
        parts += ['', f'For comparison, the {PAPERS}.', '']
    if dense_rows:
        parts += ['### Backbone forward+backward', '',
                  'Train mode; backward from random gradients of the four outputs. Swin-T: '
                  "mmpretrain's backbone with mmdet's Swin-T Mask R-CNN settings (outputs of "
                  'all four stages, drop path 0.2).', '']
        parts += markdown_table(dense_rows, DENSE_COLUMNS) + ['']
    parts.append(end_marker(key))
    return '\n'.join(parts)


def begin_marker(key: str) -> str:
    return f'<!-- benchmark.py [{key}]: begin (written by the tool; edits inside are lost) -->'


def end_marker(key: str) -> str:
    return f'<!-- benchmark.py [{key}]: end -->'


def write_section(path: Path, key: str, section: str) -> None:
    """Replace the section of ``key`` in ``path`` (or append it); keep everything else."""
    text = path.read_text() if path.exists() else '# Benchmarks\n'
    begin = text.find(begin_marker(key))
    end = text.find(end_marker(key), begin)
    if begin != -1 and end != -1:
        text = text[:begin] + section + text[end + len(end_marker(key)):]
    else:
        text = text.rstrip('\n') + '\n\n' + section + '\n'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
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
    parser.add_argument('--device', choices=['cpu', 'cuda'],
                        default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='default: cuda when available, else cpu')
    parser.add_argument('--amp', choices=sorted(AMP_DTYPES),
                        help='run the models under autocast to this type (default: float32)')
    parser.add_argument('--tf32', choices=['on', 'off'],
                        help='CUDA float32: allow TF32 in matmuls and cuDNN convolutions '
                        "(default: torch's defaults, printed in the header)")
    parser.add_argument('--channels-last', action='store_true',
                        help='models and inputs in channels-last memory format')
    parser.add_argument('--batch', type=int,
                        help='classifier batch (default: 64 on cuda, 4 on cpu)')
    parser.add_argument('--image-size', type=int, default=224,
                        help=f'classifier input side (at least {MIN_SIDE}; default 224)')
    parser.add_argument('--dense-shapes', nargs='*', type=parse_shape, metavar='BxHxW',
                        help='backbone forward+backward inputs (default: 2x800x1344 '
                        '2x512x512 on cuda, 1x512x512 1x320x544 on cpu; none: skip)')
    parser.add_argument('--skip-classifiers', action='store_true',
                        help='only the backbone table')
    parser.add_argument('--warmup', type=int, help='untimed iterations first (default: 10 '
                        'on cuda, 1 on cpu)')
    parser.add_argument('--iters', type=int,
                        help='timed iterations (default: 30 on cuda, 5 on cpu)')
    parser.add_argument('--threads', type=int, help="CPU threads for torch (default: torch's)")
    parser.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results.md'),
                        help='markdown file that gets (or updates) this run\'s section; "" '
                        'writes nothing')
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)

    defaults = DEFAULTS[args.device]
    args.cpu_defaults = args.device == 'cpu' and (args.batch is None
                                                  or args.dense_shapes is None)
    if args.batch is None:
        args.batch = defaults['batch']
    if args.dense_shapes is None:
        args.dense_shapes = [parse_shape(shape) for shape in defaults['dense_shapes']]
    for name in ('warmup', 'iters'):
        if getattr(args, name) is None:
            setattr(args, name, defaults[name])

    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: torch sees no CUDA device here (torch '
                     f'{torch.__version__}, built for CUDA {torch.version.cuda}); use '
                     '--device cpu, or a torch build that matches the driver.')
    if args.tf32 is not None and args.device != 'cuda':
        parser.error(f'--tf32 {args.tf32}: TF32 is a CUDA setting; leave it out with '
                     f'--device {args.device}.')
    for name in ('batch', 'iters', 'threads'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name} {value}: must be at least 1.')
    if args.warmup < 0:
        parser.error(f'--warmup {args.warmup}: must be 0 or more.')
    sides = [('--image-size', args.image_size)] + [
        ('--dense-shapes', side) for _, height, width in args.dense_shapes
        for side in (height, width)]
    for option, side in sides:
        if side < MIN_SIDE:
            parser.error(f'{option}: a side of {side} px is below {MIN_SIDE}, where '
                         "Swin-T's last stage would be smaller than its 7x7 window; use "
                         f'sides of at least {MIN_SIDE}.')
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its kernels
        if args.tf32 is not None:
            torch.backends.cuda.matmul.allow_tf32 = args.tf32 == 'on'
            torch.backends.cudnn.allow_tf32 = args.tf32 == 'on'
    args.load = os.getloadavg()[0]
    harness = Harness(device, args.amp, args.channels_last)
    print('\n'.join(header(harness, args)), flush=True)

    classifier_rows, dense_rows = [], []
    if not args.skip_classifiers:
        print(f'Classifier inference, batch {args.batch}, {args.image_size}x'
              f'{args.image_size}:', flush=True)
        classifier_rows = bench_classifiers(harness, args)
    if args.dense_shapes:
        print('Backbone forward+backward:', flush=True)
        dense_rows = bench_dense(harness, args)

    section = render(harness, args, classifier_rows, dense_rows)
    print(section, flush=True)
    if args.out:
        write_section(Path(args.out), section_key(harness), section)
        print(f'Written to {args.out}', flush=True)
    return dict(classifiers=classifier_rows, dense=dense_rows, section=section,
                key=section_key(harness))


if __name__ == '__main__':
    main()
