"""Benchmark SEC attention and SECViT against the paper's appendix code and mmpretrain's Swin.

Prints four tables and writes them to ``benchmarks/results.md`` (only the section between this
tool's markers is rewritten; other sections of the file are kept):

(a) the SEC attention layer against the appendix-code baseline
    (``benchmarks/sec_appendix_baseline.py``) at SECViT-T's four stage shapes for a 224x224
    input at batch 16 and at stage 1 of an 800x1344 input at batch 2, forward and
    forward+backward, with the relative error of the outputs and of the input gradients;
(b) the cost of clustering: the layer against the same layer fed already-sorted tokens
    (``sec_attention`` replaced by attention in contiguous clusters of the given order);
(c) whole classifiers: inference images/s, training step time and peak memory of SECViT-T,
    SECViT-S and mmpretrain's Swin-T at 224x224, batch 16;
(d) stage 1 of SECViT-T in ``cluster_size`` mode against ``num_clusters`` mode for inputs
    from 512x512 to 1600x1600 (time and peak memory).

Timings are medians of ``--repeats`` runs after ``--warmup`` runs; the candidates of one row
are run interleaved (their order alternating between repeats) so that load from other
processes affects them alike. CPU threads are fixed with ``--threads``. On CUDA
(``--device cuda``) every timed run is synchronised and peak memory comes from the CUDA
allocator; on CPU it comes from the profiler's allocation events. Peak memory is the most
memory allocated during the step beyond what was held before it (weights, optimizer state
and inputs are not counted). The header gives every table's user and kernel CPU time and
minor page faults: on CPU, kernel time is mostly large tensors faulted in again after the
allocator returned their memory to the OS (``--keep-freed-memory`` stops that).

Examples::

    python tools/analysis_tools/benchmark_sec.py                  # everything, CPU
    python tools/analysis_tools/benchmark_sec.py --sections ab    # layer tables only
    python tools/analysis_tools/benchmark_sec.py --quick          # smoke run on tiny shapes
    python tools/analysis_tools/benchmark_sec.py --device cuda
"""
import argparse
import contextlib
import copy
import datetime
import importlib.util
import math
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sec_mm  # noqa: E402,F401  (registers the models)
from sec_mm.models.backbones.secvit import SECViTStage  # noqa: E402
from sec_mm.models.layers import LayerNorm2d, SECAttention  # noqa: E402
from sec_mm.ops import cluster_attention, resolve_num_clusters, sec_attention  # noqa: E402

BEGIN_MARKER = ('<!-- benchmark_sec: begin (written by tools/analysis_tools/benchmark_sec.py; '
                'edits inside are overwritten) -->')
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
# Measuring
# --------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_interleaved(fns: Dict[str, Callable[[], object]], device: torch.device, repeats: int,
                     warmup: int) -> Dict[str, float]:
    """Median seconds of every function, the functions run in turns (order alternating)."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    synchronize(device)
    times = {name: [] for name in names}
    for i in range(repeats):
        for name in (names if i % 2 == 0 else names[::-1]):
            synchronize(device)
            start = time.perf_counter()
            fns[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def fewer_repeats(args) -> int:
    """Repeats for the slowest measurements: about half, but at least 3 (except in quick
    runs, which time once)."""
    return min(args.repeats, max(3, args.repeats // 2))


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Bytes allocated at the peak of ``fn()`` beyond what was allocated before it."""
    if device.type == 'cuda':
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
        if e.name() == '[memory]' and e.device_type() == torch.autograd.DeviceType.CPU)
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak


def cpu_usage() -> Dict[str, float]:
    """This process's CPU seconds in user and kernel mode and its minor page faults so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return dict(user_s=usage.ru_utime, kernel_s=usage.ru_stime, faults=usage.ru_minflt)


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """``||ours - reference|| / ||reference||`` (Frobenius norms, in float64)."""
    reference = reference.double()
    return ((ours.double() - reference).norm() / reference.norm().clamp_min(1e-30)).item()


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
# (c): whole classifiers
# --------------------------------------------------------------------------------------------
def build_classifier(name: str, image_size: int):
    from mmpretrain.registry import MODELS
    if name.startswith('SECViT'):
        arch = name[-1].lower()
        return MODELS.build(dict(
            type='ImageClassifier',
            backbone=dict(type='SECViT', arch=arch),
            head=dict(type='SECViTClsHead', num_classes=1000, in_channels=512)))
    # mmpretrain's swin-tiny_16xb64_in1k model. Maps smaller than a window only occur in the
    # quick run's tiny images (at 224 the last stage is exactly one window).
    return MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='SwinTransformer', arch='tiny', img_size=image_size,
                      drop_path_rate=0.2, pad_small_map=image_size < 224),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=1000, in_channels=768)))


def bench_backbones(args, device: torch.device) -> List[dict]:
    """Table (c): inference images/s, training step time and peak memory."""
    size, batch = (64, 2) if args.quick else (224, 16)
    names = ['SECViT-T', 'SECViT-S', 'Swin-T (mmpretrain)']
    models, optimizers = {}, {}
    gen = torch.Generator(device='cpu').manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=gen).to(device)
    labels = torch.randint(0, 1000, (batch, ), generator=gen).to(device)
    for name in names:
        torch.manual_seed(0)
        model = build_classifier(name, size).to(device)
        model.init_weights()
        models[name] = model
        optimizers[name] = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def infer(name):
        model = models[name].eval()
        with torch.no_grad():
            return model(images, mode='tensor')

    def train_step(name):
        model, optimizer = models[name].train(), optimizers[name]
        loss = F.cross_entropy(model(images, mode='tensor'), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    repeats = fewer_repeats(args)
    inference = time_interleaved({n: (lambda n=n: infer(n)) for n in names}, device, repeats,
                                 args.warmup)
    training = time_interleaved({n: (lambda n=n: train_step(n)) for n in names}, device,
                                repeats, args.warmup)
    rows = []
    for name in names:
        rows.append(dict(
            model=name, params_m=sum(p.numel() for p in models[name].parameters()) / 1e6,
            images_per_s=batch / inference[name],
            ratio_to_swin=inference[names[-1]] / inference[name],
            infer_peak_mib=peak_memory(lambda: infer(name), device) / 2**20,
            train_step_s=training[name],
            train_ratio_to_swin=training[names[-1]] / training[name],
            train_peak_mib=peak_memory(lambda: train_step(name), device) / 2**20))
        print_row(rows[-1], TABLE_C)
    return rows


# --------------------------------------------------------------------------------------------
# (d): cluster_size against num_clusters as the input grows
# --------------------------------------------------------------------------------------------
def bench_cluster_modes(args, device: torch.device) -> List[dict]:
    """Table (d): SECViT-T stage 1 (2 blocks and the downsample) in both cluster modes."""
    sizes = [64, 100, 128, 160, 200] if args.quick else [512, 800, 1024, 1280, 1600]
    reference = sizes[1]
    channels, heads, clusters = SECVIT_T_STAGES[0]
    stages = {}
    for mode, setting in (('num_clusters', dict(num_clusters=clusters)),
                          ('cluster_size', dict(cluster_size=98))):
        torch.manual_seed(0)
        stages[mode] = SECViTStage(channels, 2, heads, out_channels=128,
                                   drop_path_rates=[0., 0.], norm_cfg=dict(type='BN'),
                                   **setting).to(device).eval()
    stages['cluster_size'].load_state_dict(stages['num_clusters'].state_dict())
    rows = []
    for size in sizes:
        x = torch.randn(1, channels, size // 4, size // 4, device=device)
        fns = {mode: (lambda stage=stage: stage(x)) for mode, stage in stages.items()}
        repeats = fewer_repeats(args)
        with torch.no_grad():
            times = time_interleaved(fns, device, repeats, min(args.warmup, 1))
            memory = {mode: peak_memory(fn, device) for mode, fn in fns.items()}
        tokens = (size // 4)**2
        row = dict(size=f'{size}x{size}', tokens=tokens)
        for mode in stages:
            count = resolve_num_clusters(tokens, **(dict(num_clusters=clusters)
                                                    if mode == 'num_clusters' else
                                                    dict(cluster_size=98)))
            row[f'{mode}_tokens_per_cluster'] = math.ceil(tokens / count)
            row[f'{mode}_ms'] = times[mode] * 1e3
            row[f'{mode}_peak_mib'] = memory[mode] / 2**20
        rows.append(row)
        print(f"  {row['size']}: " + ', '.join(
            f"{mode} {row[f'{mode}_ms']:.0f} ms, {row[f'{mode}_peak_mib']:.0f} MiB"
            for mode in stages), flush=True)
    reference_row = next(row for row in rows if row['size'] == f'{reference}x{reference}')
    for row in rows:
        for mode in stages:
            row[f'{mode}_time_ratio'] = row[f'{mode}_ms'] / reference_row[f'{mode}_ms']
    return rows


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
TABLE_C = [('model', 'model', '{}'), ('params_m', 'params (M)', '{:.1f}'),
           ('images_per_s', 'inference images/s', '{:.2f}'),
           ('ratio_to_swin', 'vs Swin-T', '{:.2f}x'),
           ('infer_peak_mib', 'inference peak MiB', '{:.0f}'),
           ('train_step_s', 'train step s', '{:.2f}'),
           ('train_ratio_to_swin', 'train speed vs Swin-T', '{:.2f}x'),
           ('train_peak_mib', 'train peak MiB', '{:.0f}')]
TABLE_D = [('size', 'input', '{}'), ('tokens', 'stage-1 tokens', '{}'),
           ('num_clusters_tokens_per_cluster', 'num_clusters=32: tokens/cluster', '{}'),
           ('num_clusters_ms', 'num_clusters ms', '{:.0f}'),
           ('num_clusters_time_ratio', 'num_clusters time / 800', '{:.2f}'),
           ('num_clusters_peak_mib', 'num_clusters peak MiB', '{:.0f}'),
           ('cluster_size_tokens_per_cluster', 'cluster_size=98: tokens/cluster', '{}'),
           ('cluster_size_ms', 'cluster_size ms', '{:.0f}'),
           ('cluster_size_time_ratio', 'cluster_size time / 800', '{:.2f}'),
           ('cluster_size_peak_mib', 'cluster_size peak MiB', '{:.0f}')]


def format_cell(value, fmt: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return '-'
    return fmt.format(value)


def print_row(row: dict, columns) -> None:
    print('  ' + ', '.join(f'{title}: {format_cell(row[key], fmt)}'
                           for key, title, fmt in columns), flush=True)


def markdown_table(rows: List[dict], columns) -> str:
    lines = ['| ' + ' | '.join(title for _, title, _ in columns) + ' |',
             '|' + '---|' * len(columns)]
    for row in rows:
        lines.append('| ' + ' | '.join(format_cell(row[key], fmt)
                                        for key, _, fmt in columns) + ' |')
    return '\n'.join(lines)


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
    if results.get('c'):
        by_name = {r['model']: r for r in results['c']}
        for name, goal in (('SECViT-T', 1.16), ('SECViT-S', 0.58)):
            ratio = by_name[name]['ratio_to_swin']
            checks.append(dict(target=f'{name} inference images/s >= {goal}x Swin-T',
                               value=f'{ratio:.2f}x', met=ratio >= goal))
    if results.get('d') and len(results['d']) >= 5:
        ratio = results['d'][-1]['cluster_size_time_ratio']
        checks.append(dict(
            target=f"cluster_size stage-1 time {results['d'][-1]['size']} / "
                   f"{results['d'][1]['size']} <= 4.6",
            value=f'{ratio:.2f}', met=ratio <= 4.6))
    return checks


TABLE_TARGETS = [('target', 'target', '{}'), ('value', 'this run', '{}'),
                 ('met', 'met', '{}')]


def machine_description(args, device: torch.device) -> List[str]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    lines = [f'- date: {datetime.datetime.now().isoformat(timespec="minutes")}',
             '- command: `' + ' '.join(['python tools/analysis_tools/benchmark_sec.py'] +
                                       args.argv) + '`',
             f'- machine: {cpu}, {os.cpu_count()} logical CPUs, {platform.system()} '
             f'{platform.release()}, Python {platform.python_version()}',
             f'- torch {torch.__version__}, device {device}, '
             f'{torch.get_num_threads()} CPU threads (torch.set_num_threads)',
             '- allocator: ' + ('glibc keeping freed memory (--keep-freed-memory)'
                                if args.keep_freed_memory else 'glibc defaults')]
    if device.type == 'cuda':
        lines.append(f'- GPU: {torch.cuda.get_device_name(device)}')
    return lines


def render(results: dict, args, device: torch.device, load: Sequence[float]) -> str:
    parts = [BEGIN_MARKER, '## SEC attention and SECViT speed (benchmark_sec.py)', '']
    parts += machine_description(args, device)
    parts.append(f'- load average (1 min) at start / end: {load[0]:.2f} / {load[1]:.2f} '
                 '(other processes share the CPUs; medians of interleaved runs)')
    parts.append(f'- median of {args.repeats} timed runs after {args.warmup} warm-up runs '
                 '(fewer, at least 3, for the largest shapes and whole models)')
    if results.get('cpu'):
        # Kernel time is mostly page faults: large tensors whose memory the allocator gave
        # back to the OS are faulted in again on every allocation.
        parts.append('- CPU time per table, user / kernel (minor page faults): ' + ', '.join(
            f'({key}) {use["user_s"]:.0f} / {use["kernel_s"]:.0f} s '
            f'({use["faults"] / 1e6:.2f}M)' for key, use in results['cpu'].items()))
    if args.quick:
        parts.append('- QUICK smoke run: tiny shapes, numbers are not meaningful')
    parts.append('')
    sections = [
        ('a', '### (a) SEC attention layer vs. the appendix code',
         'Our `SECAttention` against `benchmarks/sec_appendix_baseline.py` (`SECA` as printed '
         'in paper 001, appendix E) with the same weights and the same input (the memory '
         'layout a SECViT block feeds its attention: LayerNorm2d output). `attention`: the '
         'appendix layer as printed against ours with `use_rope=False, use_lce=False`; '
         '`layer`: both with the released RoPE and LCE (the baseline adds them in the '
         'simplest way). RoPE tables are computed once per stage in both, outside the timed '
         'region. Relative error: Frobenius norm of the difference over the norm of the '
         "baseline's output (and of the gradient w.r.t. the input), float32; the last "
         'column repeats the forward comparison in float64. In float32, two tokens whose '
         'similarities to the mean key differ by less than float32 rounding (with tens of '
         'thousands of tokens per image and head, neighbours in the sorted order are often '
         '1e-6 apart) can land in different clusters in the two implementations; each such '
         'swap changes the outputs of two clusters by ~1e-4 relative. In float64 the '
         'implementations agree to rounding. "convs alone": the 1x1 qkv and output '
         'convolutions (and the LCE depthwise conv in `layer` rows) by themselves, in our '
         'layout; both implementations must run them, so "speed-up bound" = appendix time / '
         'convs time is the most that any faster sorting, gathering and attention could '
         'give.', TABLE_A),
        ('b', '### (b) Cost of clustering',
         'The full layer against the same layer without sorting, gathering and restoring: '
         'their cost is `sec_attention` minus `cluster_attention` (attention inside '
         'contiguous clusters of tokens already in cluster order), both timed on q, k, v of '
         "the layer's shape and layout; \"presorted\" is the layer's time minus that cost.",
         TABLE_B),
        ('c', '### (c) Whole classifiers, 224x224, batch 16',
         'Inference: `model(images, mode="tensor")` under `torch.no_grad()` in eval mode. '
         'Training step: forward, cross-entropy, backward and an AdamW step in train mode. '
         'Swin-T is mmpretrain\'s `swin-tiny_16xb64_in1k` model. Peak memory: most memory '
         'allocated during one step beyond what was allocated before it.', TABLE_C),
        ('d', '### (d) cluster_size vs. num_clusters as the input grows (SECViT-T stage 1)',
         'Stage 1 (two blocks and the downsample, 64 channels, 2 heads) at batch 1, '
         'inference, with `num_clusters=32` (the papers) or `cluster_size=98` (the papers\' '
         'cluster size at 224x224). Time ratios are relative to the 800x800 row (area ratio '
         '4 at 1600x1600).', TABLE_D),
    ]
    for key, title, text, columns in sections:
        if results.get(key):
            parts += [title, '', text, '', markdown_table(results[key], columns), '']
    checks = targets(results)
    if checks:
        parts += ['### Targets', '', markdown_table(checks, TABLE_TARGETS), '']
    parts.append(END_MARKER)
    return '\n'.join(parts)


def write_section(path: Path, section: str) -> None:
    """Replace this tool's section of ``path`` (or append it), keeping everything else."""
    text = path.read_text() if path.exists() else '# Benchmarks\n'
    start, end = text.find(BEGIN_MARKER), text.find(END_MARKER)
    if start != -1 and end != -1 and end > start:
        text = text[:start] + section + text[end + len(END_MARKER):]
    else:
        text = text.rstrip('\n') + '\n\n' + section + '\n'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


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


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N')
    parser.add_argument('--threads', type=int, default=len(os.sched_getaffinity(0)),
                        help='CPU threads for torch (default: the CPUs this process may use)')
    parser.add_argument('--repeats', type=int, default=7, help='timed runs per measurement')
    parser.add_argument('--warmup', type=int, default=2, help='untimed runs first')
    parser.add_argument('--sections', default='abcd',
                        help='which tables to run, any of "abcd" (default all)')
    parser.add_argument('--keep-freed-memory', action='store_true',
                        help='CPU: glibc keeps freed memory instead of returning blocks over '
                        '32 MB to the OS (whose reuse then page-faults); shows the cost '
                        'without allocator effects')
    parser.add_argument('--quick', action='store_true',
                        help='smoke run on tiny shapes (seconds); numbers are not meaningful')
    parser.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results.md'),
                        help='markdown file whose benchmark_sec section is rewritten; '
                        '"" writes nothing')
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if set(args.sections) - set('abcd') or not args.sections:
        parser.error(f'--sections takes letters from "abcd", got {args.sections!r}')
    if args.quick:
        args.repeats, args.warmup = min(args.repeats, 3), min(args.warmup, 1)
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda was given but CUDA is not available here.')
    torch.set_num_threads(args.threads)
    if args.keep_freed_memory:
        keep_freed_memory()
    load_start = os.getloadavg()[0]
    print('\n'.join(machine_description(args, device)), flush=True)
    benches = {
        'a': ('(a) SEC attention layer vs. appendix code',
              lambda: bench_layers(args, device, load_baseline())),
        'b': ('(b) clustering overhead', lambda: bench_clustering(args, device)),
        'c': ('(c) whole classifiers', lambda: bench_backbones(args, device)),
        'd': ('(d) cluster_size vs num_clusters', lambda: bench_cluster_modes(args, device)),
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
    section = render(results, args, device, (load_start, os.getloadavg()[0]))
    print(section)
    if args.out:
        write_section(Path(args.out), section)
    return results


if __name__ == '__main__':
    main()
