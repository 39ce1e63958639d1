"""Training runs of the real tools for the end-to-end tests of the run hooks (non-finite guard,
preemption, exact resume): the tiny SECViT classifier of tests/fixtures/configs on the toy
ImageNet set, in the foreground or the background, and the loss of every iteration."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

from net_helpers import free_port

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / 'tools'
TINY = REPO / 'tests/fixtures/configs/tiny-secvit_toy-imagenet.py'

# The tiny config with the randomness of a real recipe: drop path, Mixup/CutMix in the
# training processes, random crops and flips in the data worker; the loss of every iteration
# logged as it is (no smoothing window).
RANDOM_CONFIG = f"""
_base_ = {str(TINY)!r}
model = dict(
    backbone=dict(drop_path_rate=0.1),
    head=dict(loss=dict(_delete_=True, type='LabelSmoothLoss', label_smooth_val=0.1,
                        mode='original')),
    train_cfg=dict(_delete_=True, augments=[dict(type='Mixup', alpha=0.8),
                                            dict(type='CutMix', alpha=1.0)]))
train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=32, backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]))
log_processor = dict(window_size=1)
"""


def environment(**env) -> dict:
    return dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1',
                **{k: str(v) for k, v in env.items()})


def train_command(config, work_dir, *options, gpus: int = 0) -> list:
    """``tools/train.py`` (``gpus=0``) or ``tools/dist_train.sh`` with ``gpus`` processes."""
    if gpus:
        command = ['bash', TOOLS / 'dist_train.sh', config, gpus]
    else:
        command = [sys.executable, TOOLS / 'train.py', config]
    return [str(c) for c in [*command, '--work-dir', work_dir, *options]]


def run(command, cwd, log: Path, **env) -> subprocess.CompletedProcess:
    """Run to the end, output in ``log`` (also returned as ``.stdout``)."""
    with open(log, 'w') as out:
        done = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                              timeout=600, env=environment(PORT=free_port(), **env))
    done.stdout = log.read_text(errors='replace')
    return done


class Background:
    """A command started in the background, its output in a file."""

    def __init__(self, command, cwd, log: Path, **env) -> None:
        self.log = log
        with open(log, 'w') as out:
            self.proc = subprocess.Popen(command, cwd=cwd, stdout=out,
                                         stderr=subprocess.STDOUT,
                                         env=environment(PORT=free_port(), **env))

    def output(self) -> str:
        return self.log.read_text(errors='replace')

    def wait_for_output(self, pattern: str, timeout: float = 400) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.output()):
            assert self.proc.poll() is None and time.monotonic() < deadline, (
                f'no {pattern!r} in the output:\n{self.output()[-6000:]}')
            time.sleep(0.2)


def iteration_losses(work_dir: Path) -> Dict[int, float]:
    """The logged loss of every iteration of every run in ``work_dir`` (later runs win)."""
    losses = {}
    for scalars in sorted(work_dir.glob('*/vis_data/scalars.json')):
        for line in scalars.read_text().splitlines():
            row = json.loads(line)
            if 'loss' in row:
                losses[row['iter']] = row['loss']
    return losses


def last_checkpoint(work_dir: Path) -> Path:
    """The checkpoint ``last_checkpoint`` names, in ``work_dir`` (by file name)."""
    return work_dir / Path((work_dir / 'last_checkpoint').read_text().strip()).name
