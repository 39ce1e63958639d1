"""SEC attention against the paper's appendix code, and what clustering costs.

Tables (``--sections``, default ``ab``):

(a) the SEC attention layer against the appendix-code baseline
    (``benchmarks/sec_appendix_baseline.py``) at SECViT-T's four stage shapes for a 224x224
    input at batch 16 and at stage 1 of an 800x1344 input at batch 2, forward and
    forward+backward, with the relative error of the outputs and of the input gradients;
(b) the cost of clustering: the layer against the same layer fed already-sorted tokens
    (``sec_attention`` replaced by attention in contiguous clusters of the given order).

Whole models, and the two cluster modes as the input grows, are ``benchmark.py``'s. Timing
comes from ``benchmarks/harness.py`` (warm-up, candidates in turns, medians). The header gives
every table's user and kernel CPU time and minor page faults: on CPU, kernel time is mostly
large tensors faulted in again after the allocator returned their memory to the OS
(``--keep-freed-memory`` stops that). Tables are printed; ``--out FILE`` also writes them into
this tool's section of FILE.

Examples::

    python tools/analysis_tools/benchmark_sec.py --threads 2       # everything, CPU
    python tools/analysis_tools/benchmark_sec.py --sections a      # the layer table only
    python tools/analysis_tools/benchmark_sec.py --quick           # smoke run on tiny shapes
    python tools/analysis_tools/benchmark_sec.py --device cuda --out benchmarks/results.md
"""
import argparse
import copy
import importlib.util
import os
import resource
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
SECTION = 'benchmark_sec'

from benchmarks.harness import (add_output_arguments, environment_lines,  # noqa: E402
                                markdown_table, print_row, relative_error, time_in_turns,
                                write_section)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N')
    parser.add_argument('--repeats', type=int, default=7, help='timed runs per measurement')
    parser.add_argument('--warmup', type=int, default=2, help='untimed runs first')
    parser.add_argument('--sections', default='ab',
                        help='which tables to run, any of "ab" (default both)')
    parser.add_argument('--keep-freed-memory', action='store_true',
                        help='CPU: glibc keeps freed memory instead of returning blocks over '
                        '32 MB to the OS (whose reuse then page-faults); shows the cost '
                        'without allocator effects')
    parser.add_argument('--quick', action='store_true',
                        help='smoke run on tiny shapes (seconds); numbers are not meaningful')
    add_output_arguments(parser, threads_default=len(os.sched_getaffinity(0)))
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if set(args.sections) - set('ab') or not args.sections:
        parser.error(f'--sections takes letters from "ab", got {args.sections!r}')
    if args.quick:
        args.repeats, args.warmup = min(args.repeats, 3), min(args.warmup, 1)
    return args


if __name__ == '__main__':
    parse_args()  # --help and bad arguments answer before the heavy imports below

import torch  # noqa: E402

import sec_mm  # noqa: E402,F401  (registers the models)
from sec_mm.models.layers import LayerNorm2d, SECAttention  # noqa: E402
from sec_mm.ops import cluster_attention, sec_attention  # noqa: E402

END_MARKER = '<!-- benchmark_sec: end -->'

# SECViT-T: (channels, heads, clusters) of its four stages; clusters <= 1 is global attention.
SECVIT_T_STAGES = [(64, 2, 32), (128, 4, 8), (256, 8, 2), (512, 16, -1)]


def load_baseline():
    """The appendix-code baseline module (it lives in benchmarks/, outside the package)."""
    path = ROOT / 'benchmarks' / 'sec_appendix_baseline.py'
    spec = importlib.util.spec_from_file_location('sec_appendix_baseline', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------


def time_interleaved(fns, device: torch.device, repeats: int, warmup: int) -> Dict[str, float]:
    """Median seconds of every function, the functions in turns (harness)."""
    return {name: t.median for name, t in time_in_turns(fns, device, repeats, warmup).items()}


def fewer_repeats(args) -> int:
    """Repeats for the slowest measurements: about half, but at least 3 (except in quick
    runs, which time once)."""
    return min(args.repeats, max(3, args.repeats // 2))


def cpu_usage() -> Dict[str, float]:
    """This process's CPU seconds in user and kernel mode and its minor page faults so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return dict(user_s=usage.ru_utime, kernel_s=usage.ru_stime, faults=usage.ru_minflt)


def as_block_input(x: torch.Tensor) -> torch.Tensor:
    """The memory layout a SECViT block hands its attention: the output of LayerNorm2d."""
    norm = LayerNorm2d(x.shape[1]).to(x.device)
    with torch.no_grad():
        return norm(x)


# --------------------------------------------------------------------------------------------
# (a) and (b): the layer
# --------------------------------------------------------------------------------------------
def layer_shapes(quick: bool) -> List[dict]:
    """SECViT-T stage shapes: 224x224 at batch 16 (stages 1-4) and 800x1344 at batch 2."""
    size, batch, det_size, det_batch = ((64, 2, (128, 192), 1) if quick else
                                        (224, 16, (800, 1344), 2))
    shapes = []
    for i, (channels, heads, clusters) in enumerate(SECVIT_T_STAGES):
        side = size // 2**(i + 2)
        shapes.append(dict(name=f'stage {i + 1} @ {size}x{size}', kind='stage', batch=batch,
                           channels=channels, heads=heads, clusters=clusters,
                           height=side, width=side))
    channels, heads, clusters = SECVIT_T_STAGES[0]
    shapes.append(dict(name=f'stage 1 @ {det_size[0]}x{det_size[1]}', kind='detection',
                       batch=det_batch,
                       channels=channels, heads=heads, clusters=clusters,
                       height=det_size[0] // 4, width=det_size[1] // 4))
    return shapes


def build_layer_pair(shape: dict, part: str, device: torch.device, baseline):
    """Our SECAttention and the appendix SECA with the same weights, plus their RoPE tables."""
    full = part == 'layer'
    torch.manual_seed(0)
    ours = SECAttention(shape['channels'], shape['heads'], num_clusters=shape['clusters'],
                        use_rope=full, use_lce=full).to(device)
    base = baseline.SECA(shape['channels'], shape['heads'], shape['clusters'], use_rope=full,
                         use_lce=full).to(device).load_from_sec_mm(ours)
    h, w = shape['height'], shape['width']
    ours_rope = ours.rope(h, w) if full else None
    base_rope = baseline.rope_tables(h, w, shape['channels'] // shape['heads'],
                                     device) if full else None
    return ours, base, ours_rope, base_rope


def float64_error(shape: dict, ours, base, ours_rope, base_rope, x: torch.Tensor) -> float:
    """Relative error of the two layers' outputs in float64, where neighbouring similarities
    never tie within rounding (NaN when the baseline's float64 attention matrices would take
    more than 1 GiB)."""
    tokens = shape['height'] * shape['width']
    clusters = max(shape['clusters'], 1)
    attention_bytes = shape['batch'] * shape['heads'] * tokens * tokens // clusters * 8
    if attention_bytes > 2**30:
        return float('nan')
    cast = (lambda t: None if t is None else tuple(u.double() for u in t))
    with torch.no_grad():
        return relative_error(copy.deepcopy(ours).double()(x.double(), cast(ours_rope)),
                              copy.deepcopy(base).double()(x.double(), cast(base_rope)))


def forward_backward(layer, x: torch.Tensor, rope, grad: torch.Tensor) -> torch.Tensor:
    x.grad = None
    layer(x, rope).backward(grad)
    return x.grad


def shared_conv_fns(layer: SECAttention, x: torch.Tensor):
    """Forward and forward+backward of the dense convolutions alone (qkv and output 1x1
    convs, and the LCE depthwise conv when the layer has it), in our channels-last layout.

    Both implementations must run these convolutions; everything else (sorting, gathers,
    RoPE, attention, restoring) is where they can differ. So ``appendix time / this time`` is
    the largest speed-up any rewrite of the rest could reach.
    """
    channels_last = torch.channels_last
    x = x.detach().contiguous(memory_format=channels_last).requires_grad_()
    y = torch.randn_like(x).contiguous(memory_format=channels_last).requires_grad_()
    convs = [(layer.qkv, x), (layer.proj, y)]
    if layer.lce is not None:
        convs.append((layer.lce, y))
    with torch.no_grad():
        grads = [torch.randn_like(conv(inp)) for conv, inp in convs]

    def forward():
        with torch.no_grad():
            for conv, inp in convs:
                conv(inp)

    def forward_backward_convs():
        torch.autograd.backward([conv(inp) for conv, inp in convs], grads)

    return forward, forward_backward_convs


def bench_layers(args, device: torch.device, baseline) -> List[dict]:
    """Table (a): our layer against the appendix baseline."""
    rows = []
    for shape in layer_shapes(args.quick):
        big = shape['height'] * shape['width'] > 20000
        repeats = fewer_repeats(args) if big else args.repeats
        for part in ('attention', 'layer'):
            ours, base, ours_rope, base_rope = build_layer_pair(shape, part, device, baseline)
            gen = torch.Generator(device='cpu').manual_seed(1)
            x = torch.randn(shape['batch'], shape['channels'], shape['height'], shape['width'],
                            generator=gen).to(device)
            x = as_block_input(x)
            with torch.no_grad():
                out_ours, out_base = ours(x, ours_rope), base(x, base_rope)
            err64 = float64_error(shape, ours, base, ours_rope, base_rope, x)
            convs_fwd, convs_fwdbwd = shared_conv_fns(ours, x)
            with torch.no_grad():
                fwd = time_interleaved(
                    {'base': lambda: base(x, base_rope), 'ours': lambda: ours(x, ours_rope),
                     'convs': convs_fwd}, device, repeats, args.warmup)
            grad = torch.randn(out_base.shape, generator=gen).to(device)
            xg = x.detach().clone().requires_grad_()
            grad_ours = forward_backward(ours, xg, ours_rope, grad).clone()
            grad_base = forward_backward(base, xg, base_rope, grad).clone()
            both = time_interleaved(
                {'base': lambda: forward_backward(base, xg, base_rope, grad),
                 'ours': lambda: forward_backward(ours, xg, ours_rope, grad),
                 'convs': convs_fwdbwd}, device, repeats, args.warmup)
            rows.append(dict(
                shape=shape['name'], kind=shape['kind'],
                tensor='x'.join(map(str, (shape['batch'], shape['channels'], shape['height'],
                                          shape['width']))),
                heads=shape['heads'], clusters=shape['clusters'], part=part,
                base_fwd_ms=fwd['base'] * 1e3, ours_fwd_ms=fwd['ours'] * 1e3,
                fwd_speedup=fwd['base'] / fwd['ours'],
                base_fwdbwd_ms=both['base'] * 1e3, ours_fwdbwd_ms=both['ours'] * 1e3,
                fwdbwd_speedup=both['base'] / both['ours'],
                convs_fwd_ms=fwd['convs'] * 1e3, max_fwd_speedup=fwd['base'] / fwd['convs'],
                convs_fwdbwd_ms=both['convs'] * 1e3,
                max_fwdbwd_speedup=both['base'] / both['convs'],
                rel_err_out=relative_error(out_ours, out_base),
                rel_err_grad=relative_error(grad_ours, grad_base), rel_err_64=err64))
            print_row(rows[-1], TABLE_A)
    return rows


def attention_inputs(shape: dict, device: torch.device):
    """q, k, v of a layer's shape and layout (v a head-sliced view of token-major values),
    requiring gradients."""
    batch, heads, length = shape['batch'], shape['heads'], shape['height'] * shape['width']
    dims = shape['channels'] // heads
    q, k = (torch.randn(batch, heads, length, dims, device=device) for _ in range(2))
    v = torch.randn(batch, length, heads, dims, device=device).transpose(1, 2)
    return [t.requires_grad_() for t in (q, k, v)]


def bench_clustering(args, device: torch.device) -> List[dict]:
    """Table (b): the share of the layer's time spent sorting, gathering and restoring.

    That share is ``sec_attention`` minus ``cluster_attention`` (attention inside contiguous
    clusters of tokens given in cluster order), both on q, k, v of the layer's shape; the
    "presorted" layer time is the layer's time minus it.
    """
    rows = []
    for shape in layer_shapes(args.quick):
        if shape['clusters'] <= 1:
            continue  # global attention does not cluster
        torch.manual_seed(0)
        layer = SECAttention(shape['channels'], shape['heads'],
                             num_clusters=shape['clusters']).to(device)
        rope = layer.rope(shape['height'], shape['width'])
        x = as_block_input(torch.randn(shape['batch'], shape['channels'], shape['height'],
                                       shape['width'], device=device))
        grad = torch.randn_like(x)
        xg = x.detach().clone().requires_grad_()
        q, k, v = attention_inputs(shape, device)
        count, scale = shape['clusters'], q.shape[-1]**-0.5
        grad_qkv = torch.randn_like(q)

        def clustered(q, k, v):
            return sec_attention(q, k, v, num_clusters=count, scale=scale)

        def presorted(q, k, v):
            return cluster_attention(q, k, v, count, scale)

        def no_grad(fn):
            def run():
                with torch.no_grad():
                    fn(q, k, v)
            return run

        def with_grad(fn):
            def run():
                torch.autograd.grad(fn(q, k, v), (q, k, v), grad_qkv)
            return run

        def layer_fwd():
            with torch.no_grad():
                layer(x, rope)

        big = shape['height'] * shape['width'] > 20000
        repeats = fewer_repeats(args) if big else args.repeats
        fwd = time_interleaved(
            {'layer': layer_fwd, 'sec': no_grad(clustered), 'presorted': no_grad(presorted)},
            device, repeats, args.warmup)
        both = time_interleaved(
            {'layer': lambda: forward_backward(layer, xg, rope, grad),
             'sec': with_grad(clustered), 'presorted': with_grad(presorted)},
            device, repeats, args.warmup)
        for times in (fwd, both):
            times['presorted'] = times['layer'] - (times['sec'] - times['presorted'])
        rows.append(dict(
            shape=shape['name'], clusters=shape['clusters'],
            layer_fwd_ms=fwd['layer'] * 1e3, presorted_fwd_ms=fwd['presorted'] * 1e3,
            overhead_fwd_pct=100 * (fwd['layer'] - fwd['presorted']) / fwd['layer'],
            layer_fwdbwd_ms=both['layer'] * 1e3, presorted_fwdbwd_ms=both['presorted'] * 1e3,
            overhead_fwdbwd_pct=100 * (both['layer'] - both['presorted']) / both['layer']))
        print_row(rows[-1], TABLE_B)
    return rows


# --------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------
TABLE_A = [('shape', 'shape', '{}'), ('tensor', 'B x C x H x W', '{}'), ('heads', 'heads', '{}'),
           ('clusters', 'clusters', '{}'), ('part', 'part', '{}'),
           ('base_fwd_ms', 'appendix fwd ms', '{:.1f}'), ('ours_fwd_ms', 'ours fwd ms', '{:.1f}'),
           ('fwd_speedup', 'fwd speed-up', '{:.2f}x'),
           ('base_fwdbwd_ms', 'appendix fwd+bwd ms', '{:.1f}'),
           ('ours_fwdbwd_ms', 'ours fwd+bwd ms', '{:.1f}'),
           ('fwdbwd_speedup', 'fwd+bwd speed-up', '{:.2f}x'),
           ('convs_fwd_ms', 'convs alone fwd ms', '{:.1f}'),
           ('max_fwd_speedup', 'fwd speed-up bound', '{:.2f}x'),
           ('convs_fwdbwd_ms', 'convs alone fwd+bwd ms', '{:.1f}'),
           ('max_fwdbwd_speedup', 'fwd+bwd speed-up bound', '{:.2f}x'),
           ('rel_err_out', 'rel. err. output', '{:.1e}'),
           ('rel_err_grad', 'rel. err. input grad', '{:.1e}'),
           ('rel_err_64', 'rel. err. float64', '{:.1e}')]
TABLE_B = [('shape', 'shape', '{}'), ('clusters', 'clusters', '{}'),
           ('layer_fwd_ms', 'layer fwd ms', '{:.1f}'),
           ('presorted_fwd_ms', 'presorted fwd ms', '{:.1f}'),
           ('overhead_fwd_pct', 'clustering share fwd', '{:.1f}%'),
           ('layer_fwdbwd_ms', 'layer fwd+bwd ms', '{:.1f}'),
           ('presorted_fwdbwd_ms', 'presorted fwd+bwd ms', '{:.1f}'),
           ('overhead_fwdbwd_pct', 'clustering share fwd+bwd', '{:.1f}%')]

def speedup_summary(layer_rows: List[dict], kind: str) -> str:
    """Per-stage speed-ups, each with the bound the shared convolutions allow."""
    return ', '.join(f"{r['shape'].split(' @')[0]} {r[kind + '_speedup']:.2f}x "
                     f"(bound {r['max_' + kind + '_speedup']:.2f}x)" for r in layer_rows)


def targets(results: dict) -> List[dict]:
    """The speed and accuracy targets, checked against this run."""
    checks = []
    layer_rows = [r for r in results.get('a', [])
                  if r['kind'] == 'stage' and r['part'] == 'layer']
    if layer_rows:
        worst_fwd = min(r['fwd_speedup'] for r in layer_rows)
        worst_both = min(r['fwdbwd_speedup'] for r in layer_rows)
        stage_rows = [r for r in results['a'] if r['kind'] == 'stage']
        worst_err = max(max(r['rel_err_out'], r['rel_err_grad']) for r in stage_rows)
        checks += [
            dict(target='layer fwd >= 2x appendix at every SECViT-T stage',
                 value=speedup_summary(layer_rows, 'fwd'), met=worst_fwd >= 2),
            dict(target='layer fwd+bwd >= 1.5x appendix at every SECViT-T stage',
                 value=speedup_summary(layer_rows, 'fwdbwd'), met=worst_both >= 1.5),
            dict(target='relative error <= 1e-5 (float32) at the SECViT-T stage shapes',
                 value=f'{worst_err:.1e} (worst)',
                 met=worst_err <= 1e-5)]
    if results.get('b'):
        stage1 = results['b'][0]
        checks.append(dict(
            target='clustering overhead <= 15% of the layer at stage 1',
            value=f"{stage1['overhead_fwd_pct']:.1f}% fwd, "
                  f"{stage1['overhead_fwdbwd_pct']:.1f}% fwd+bwd",
            met=max(stage1['overhead_fwd_pct'], stage1['overhead_fwdbwd_pct']) <= 15))
    return checks


TABLE_TARGETS = [('target', 'target', '{}'), ('value', 'this run', '{}'),
                 ('met', 'met', '{}')]




def render(results: dict, args, device: torch.device) -> str:
    parts = ['## SEC attention and SECViT speed (benchmark_sec.py)', '']
    parts += environment_lines(device, 'tools/analysis_tools/benchmark_sec.py', args.argv)
    parts.append('- allocator: ' + ('glibc keeping freed memory (--keep-freed-memory)'
                                    if args.keep_freed_memory else 'glibc defaults'))
    parts.append(f'- median of {args.repeats} timed runs after {args.warmup} warm-up runs '
                 '(fewer, at least 3, for the largest shapes), candidates in turns')
    # Kernel time is mostly page faults: large tensors whose memory the allocator gave back
    # to the OS are faulted in again on every allocation.
    parts.append('- CPU time per table, user / kernel (minor page faults): ' + ', '.join(
        f'({key}) {use["user_s"]:.0f} / {use["kernel_s"]:.0f} s ({use["faults"] / 1e6:.2f}M)'
        for key, use in results['cpu'].items()))
    if args.quick:
        parts.append('- QUICK smoke run: tiny shapes, numbers are not meaningful')
    parts.append('')
    sections = [
        ('a', '### (a) SEC attention layer vs. the appendix code',
         'Our `SECAttention` against `benchmarks/sec_appendix_baseline.py` (`SECA` as printed '
         'in paper 001, appendix E) with the same weights and input (a LayerNorm2d output, the '
         'layout a SECViT block feeds its attention). `attention`: the appendix layer as '
         'printed against ours with `use_rope=False, use_lce=False`; `layer`: both with the '
         'released RoPE and LCE. Relative errors: Frobenius norm of the difference over the '
         "baseline's (output, input gradient), float32, and the forward again in float64. In "
         'float32, tokens whose similarities differ by less than rounding can land in '
         'different clusters in the two implementations (~1e-4 relative per swap); in float64 '
         'they agree to rounding. "convs alone": the 1x1 qkv and output convolutions (and the '
         'LCE conv in `layer` rows), which both must run: "speed-up bound" = appendix time / '
         'convs time is the most any faster sorting, gathering and attention could give.',
         TABLE_A),
        ('b', '### (b) Cost of clustering',
         'The cost of sorting, gathering and restoring is `sec_attention` minus '
         '`cluster_attention` (attention inside contiguous clusters of tokens already in '
         'cluster order), both on q, k, v of the layer\'s shape and layout; "presorted" is the '
         "layer's time minus that cost.", TABLE_B),
    ]
    for key, title, text, columns in sections:
        if results.get(key):
            parts += [title, '', text, '', markdown_table(results[key], columns), '']
    if results['targets']:
        parts += ['### Targets', '', markdown_table(results['targets'], TABLE_TARGETS), '']
    return '\n'.join(parts)


def keep_freed_memory() -> None:
    """Make glibc keep freed memory in the process (no mmap for large blocks, no trimming),
    so that large tensors are not page-faulted in again on every allocation: what a caching
    allocator (CUDA's, tcmalloc, jemalloc) gives. Affects every implementation alike."""
    import ctypes
    import ctypes.util
    libc = ctypes.CDLL(ctypes.util.find_library('c'))
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    if not (libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2**31 - 1)):
        raise SystemExit('--keep-freed-memory: mallopt failed (needs glibc).')



def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda was given but CUDA is not available here.')
    torch.set_num_threads(args.threads)
    if args.keep_freed_memory:
        keep_freed_memory()
    benches = {
        'a': ('(a) SEC attention layer vs. appendix code',
              lambda: bench_layers(args, device, load_baseline())),
        'b': ('(b) clustering overhead', lambda: bench_clustering(args, device)),
    }
    results = {'cpu': {}}
    for key, (title, bench) in benches.items():
        if key in args.sections:
            print(title, flush=True)
            before = cpu_usage()
            results[key] = bench()
            results['cpu'][key] = {name: value - before[name]
                                   for name, value in cpu_usage().items()}
    results['targets'] = targets(results)
    section = render(results, args, device)
    print(section)
    if args.out:
        write_section(args.out, SECTION, section)
    return results


if __name__ == '__main__':
    main()
