"""Every CPU kernel of :mod:`sec_mm.ops.dispatch` against its plain PyTorch op, in one run.

Two parts, both at the shapes of SECViT-T on a 224x224 input:

1. each primitive alone (forward, or forward+backward where it is differentiable), kernel vs.
   the plain op forced by ``dispatch.plain_ops(name)``;
2. the whole backbone's forward+backward with all kernels, with none, and with each kernel
   turned off in turn (what a kernel is worth in the model).

Candidates of one row run interleaved, their order alternating between repeats, after warm-up
runs; the table gives the median and the minimum of each and the ratio of the medians
(plain / kernel: above 1 means the kernel is faster).

Examples::

    python benchmarks/dispatch_kernels.py --threads 2 --batch 8
    python benchmarks/dispatch_kernels.py --only --inference   # the model's forward alone
"""
import argparse
import contextlib
import statistics
import sys
from pathlib import Path
from typing import Callable, Dict

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sec_mm  # noqa: E402,F401  (registers the models)
from benchmarks.harness import time_in_turns  # noqa: E402
from sec_mm.models.backbones.secvit import SECViT  # noqa: E402
from sec_mm.models.layers import RotaryEmbedding2d  # noqa: E402
from sec_mm.ops import dispatch  # noqa: E402
from sec_mm.ops.cpu import short_attention  # noqa: E402

# (channels, heads, clusters, side) of SECViT-T's stages at 224x224.
STAGES = [(64, 2, 32, 56), (128, 4, 8, 28), (256, 8, 2, 14), (512, 16, 1, 7)]
HEAD_DIMS = 32


def time_interleaved(candidates: Dict[str, Callable[[], object]], repeats: int,
                     warmup: int) -> Dict[str, list]:
    """Seconds of every run of every candidate, in turns (``benchmarks/harness.py``)."""
    return {name: timing.runs
            for name, timing in time_in_turns(candidates, 'cpu', repeats, warmup).items()}


def kernel_vs_plain(name: str, run: Callable[[], object], repeats: int, warmup: int) -> dict:

    def plain():
        with dispatch.plain_ops(name):
            return run()

    times = time_interleaved({'kernel': run, 'plain': plain}, repeats, warmup)
    kernel, plain_ = statistics.median(times['kernel']), statistics.median(times['plain'])
    return dict(kernel_ms=kernel * 1e3, plain_ms=plain_ * 1e3, ratio=plain_ / kernel,
                kernel_min_ms=min(times['kernel']) * 1e3, plain_min_ms=min(times['plain']) * 1e3)


def fwd_bwd(fn: Callable[..., object], *inputs: torch.Tensor) -> Callable[[], None]:
    """A closure running ``fn`` and, when any input requires grad, its backward."""

    def run():
        out = fn(*inputs)
        outs = out if isinstance(out, tuple) else (out, )
        if any(t.requires_grad for t in inputs):
            torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
            for t in inputs:
                t.grad = None

    return run


def primitive_rows(batch: int):
    """(primitive, description, closure) for every kernel at SECViT-T's stage shapes."""
    gen = torch.Generator().manual_seed(0)
    rows = []
    for stage, (channels, heads, clusters, side) in enumerate(STAGES[:3], 1):
        length = side * side
        values = torch.randn(batch, heads, length, generator=gen)
        rows.append(('stable_argsort', f'stage {stage} similarities {tuple(values.shape)}',
                     fwd_bwd(dispatch.stable_argsort, values)))
    for stage, (channels, heads, clusters, side) in enumerate(STAGES[:3], 1):
        length = side * side
        packed = torch.randn(batch, length, 3, heads, HEAD_DIMS, generator=gen,
                             requires_grad=True)
        order = torch.stack([torch.randperm(length, generator=gen)
                             for _ in range(batch * heads)]).view(batch, heads, length)

        def gathers_and_restore(packed, order=order):
            inverse = dispatch.inverse_permutation(order)
            q, k, v = (dispatch.permute_rows(t.transpose(1, 2), order, inverse)
                       for t in packed.unbind(2))
            return dispatch.scatter_rows(q + k + v, order, inverse)

        rows.append(('rows', f'stage {stage}: 3 permutations + 1 restore of '
                     f'{(batch, heads, length, HEAD_DIMS)} (strided views), fwd+bwd',
                     fwd_bwd(gathers_and_restore, packed)))
    for stage, (channels, heads, clusters, side) in enumerate(STAGES, 1):
        length = side * side // clusters
        q, k, v = (torch.randn(batch, heads * clusters, length, HEAD_DIMS, generator=gen,
                               requires_grad=True) for _ in range(3))
        rows.append(('attention', f'stage {stage} clusters {tuple(q.shape)}, fwd+bwd',
                     fwd_bwd(dispatch.attention, q, k, v)))
    q, k, v = (torch.randn(batch, 64, 128, HEAD_DIMS, generator=gen, requires_grad=True)
               for _ in range(3))
    rows.append(('attention', f'the longest kernel case {tuple(q.shape)}, fwd+bwd',
                 fwd_bwd(dispatch.attention, q, k, v)))
    for stage, (channels, heads, clusters, side) in enumerate(STAGES[:2], 1):
        sin, cos = RotaryEmbedding2d(HEAD_DIMS)(side, side)
        projection = torch.randn(batch, 3 * channels, side, side, generator=gen).contiguous(
            memory_format=torch.channels_last).requires_grad_()

        def rope(projection, sin=sin, cos=cos, heads=heads, side=side):
            qkv = projection.permute(0, 2, 3, 1).reshape(batch, side * side, 3, heads,
                                                         HEAD_DIMS)
            return dispatch.split_qkv_with_rope(qkv, sin, cos)

        rows.append(('split_qkv_with_rope',
                     f'stage {stage} qkv {(batch, side * side, 3, heads, HEAD_DIMS)}, fwd+bwd',
                     fwd_bwd(rope, projection)))
    for channels in (64, 192):
        conv = torch.nn.Conv2d(channels, channels, 3, padding=1, groups=channels).to(
            memory_format=torch.channels_last)
        x = torch.randn(batch, channels, 56, 56, generator=gen).contiguous(
            memory_format=torch.channels_last).requires_grad_()
        rows.append(('add_into_fresh', f'x + dwconv3x3(x) {tuple(x.shape)}, fwd+bwd',
                     fwd_bwd(lambda x, conv=conv: dispatch.add_into_fresh(conv(x), x), x)))
    return rows


def attention_threshold_rows(repeats: int, warmup: int):
    """The explicit attention kernel called directly (``dispatch`` keeps it to at most
    ``short_attention.MAX_LENGTH`` keys) against ``scaled_dot_product_attention``, for
    longer sequences: where the threshold belongs."""
    gen = torch.Generator().manual_seed(0)
    for sequences, length in ((128, 196), (64, 256), (64, 392)):
        q, k, v = (torch.randn(1, sequences, length, HEAD_DIMS, generator=gen,
                               requires_grad=True) for _ in range(3))
        times = time_interleaved(
            {'kernel': fwd_bwd(lambda *t: short_attention.attention(*t, HEAD_DIMS**-0.5),
                               q, k, v),
             'plain': fwd_bwd(torch.nn.functional.scaled_dot_product_attention, q, k, v)},
            repeats, warmup)
        kernel, plain = (statistics.median(times[name]) for name in ('kernel', 'plain'))
        yield (f'{tuple(q.shape)}, fwd+bwd, explicit kernel forced', kernel * 1e3,
               plain * 1e3, plain / kernel)


def model_rows(batch: int, repeats: int, warmup: int, inference: bool = False):
    """SECViT-T forward+backward (forward alone with ``inference``) with all kernels, none,
    and each turned off in turn."""
    torch.manual_seed(0)
    model = SECViT(arch='t', out_indices=(3, ))
    x = torch.randn(batch, 3, 224, 224)

    def step(*plain):
        def run():
            context = dispatch.plain_ops(*plain) if plain else contextlib.nullcontext()
            with context, torch.set_grad_enabled(not inference):
                out = model(x)[-1].mean()
                if not inference:
                    out.backward()
            model.zero_grad(set_to_none=True)
        return run

    candidates = {'all kernels': step(), 'no kernel': step(*dispatch.PRIMITIVES)}
    candidates.update({f'without {name}': step(name) for name in dispatch.PRIMITIVES})
    times = time_interleaved(candidates, repeats, warmup)
    base = statistics.median(times['all kernels'])
    return [dict(variant=name, median_ms=statistics.median(t) * 1e3, min_ms=min(t) * 1e3,
                 ratio=statistics.median(t) / base) for name, t in times.items()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--repeats', type=int, default=15)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--model-repeats', type=int, default=5)
    parser.add_argument('--only', nargs='*', choices=dispatch.PRIMITIVES,
                        help='primitives to measure alone (default: all)')
    parser.add_argument('--skip-model', action='store_true')
    parser.add_argument('--inference', action='store_true',
                        help='time the model forward alone, under torch.no_grad()')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, '
          f'median of {args.repeats} interleaved repeats after {args.warmup} warm-up runs')
    rows = [row for row in primitive_rows(args.batch)
            if args.only is None or row[0] in args.only]
    if rows:
        print('\n| primitive | case | kernel ms (min) | plain ms (min) | plain / kernel: medians '
              '(minimums) |')
        print('|---|---|---|---|---|')
    for name, case, run in rows:
        row = kernel_vs_plain(name, run, args.repeats, args.warmup)
        print(f"| {name} | {case} | {row['kernel_ms']:.2f} ({row['kernel_min_ms']:.2f}) | "
              f"{row['plain_ms']:.2f} ({row['plain_min_ms']:.2f}) | {row['ratio']:.2f}x "
              f"({row['plain_min_ms'] / row['kernel_min_ms']:.2f}x) |",
              flush=True)
    if args.only is None or 'attention' in args.only:
        for case, kernel, plain, ratio in attention_threshold_rows(args.repeats, args.warmup):
            print(f'| attention | {case} | {kernel:.2f} | {plain:.2f} | {ratio:.2f}x |',
                  flush=True)
    if args.skip_model:
        return
    step = 'forward (no_grad)' if args.inference else 'forward+backward'
    print(f'\nSECViT-T {step}, batch {args.batch} at 224x224, median of '
          f'{args.model_repeats} interleaved repeats after 1 warm-up run')
    print('\n| variant | median ms | min ms | time / all kernels |')
    print('|---|---|---|---|')
    for row in model_rows(args.batch, args.model_repeats, 1, args.inference):
        print(f"| {row['variant']} | {row['median_ms']:.0f} | {row['min_ms']:.0f} | "
              f"{row['ratio']:.3f} |", flush=True)


if __name__ == '__main__':
    main()
