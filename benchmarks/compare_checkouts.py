"""SECViT-T forward+backward time of two sec_mm checkouts, measured in the same run.

One worker process per checkout (``PYTHONPATH`` set to it) builds SECViT-T with the same seed;
the driver then asks the workers for one step each in turn, alternating which goes first, so
that load from other processes affects both alike. Prints the median and minimum of each and
the ratio of the medians.

Example (the base checkout from ``git archive <commit> | tar -x -C /tmp/base``)::

    python benchmarks/compare_checkouts.py /tmp/base . --threads 2 --batch 8 --repeats 10
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.harness import time_in_turns  # noqa: E402

WORKER = r'''
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
batch = int(sys.argv[2])
import sec_mm  # registers the models
from mmpretrain.registry import MODELS
torch.manual_seed(0)
model = MODELS.build(dict(type='SECViT', arch='t', out_indices=(3, )))
x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
print(sec_mm.__file__, flush=True)
for line in sys.stdin:
    start = time.perf_counter()
    model(x)[-1].mean().backward()
    model.zero_grad(set_to_none=True)
    print(time.perf_counter() - start, flush=True)
'''


def start_worker(checkout: Path, threads: int, batch: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(checkout.resolve()))
    worker = subprocess.Popen([sys.executable, '-c', WORKER, str(threads), str(batch)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                              cwd=str(checkout))
    print(f'{checkout}: sec_mm from {worker.stdout.readline().strip()}', flush=True)
    return worker


def step(worker: subprocess.Popen) -> float:
    worker.stdin.write('step\n')
    worker.stdin.flush()
    return float(worker.stdout.readline())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('base', type=Path, help='checkout measured first (the reference)')
    parser.add_argument('new', type=Path, help='checkout compared against it')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    args = parser.parse_args()
    workers = {'base': start_worker(args.base, args.threads, args.batch),
               'new': start_worker(args.new, args.threads, args.batch)}
    # Steps in turns, the first alternating (harness); a step is one worker's forward+backward.
    timings = time_in_turns({name: (lambda w=w: step(w)) for name, w in workers.items()},
                            'cpu', args.repeats, args.warmup)
    times = {name: timing.runs for name, timing in timings.items()}
    for worker in workers.values():
        worker.stdin.close()
        worker.wait()
    result = {name: dict(median_ms=statistics.median(t) * 1e3, min_ms=min(t) * 1e3,
                         runs_ms=[round(s * 1e3) for s in t]) for name, t in times.items()}
    result['new / base (medians)'] = result['new']['median_ms'] / result['base']['median_ms']
    result['new / base (minimums)'] = result['new']['min_ms'] / result['base']['min_ms']
    print(json.dumps(result, indent=1))


if __name__ == '__main__':
    main()
