"""Preemption end to end: SIGTERM to tools/dist_train.sh (what Slurm and Kubernetes send, and
torchrun passes on to the process groups of its workers) during a 2-process run. Every rank
finishes its iteration, the iteration is saved, all processes exit, and --resume continues
with the losses the run would have had without the stop, bit for bit."""
import os
import re
import signal
import time
import uuid
from pathlib import Path

import pytest

from process_helpers import alive
from training_helpers import (RANDOM_CONFIG, Background, iteration_losses, last_checkpoint, run,
                              train_command)

MARK = 'SEC_MM_PREEMPTION_TEST_RUN'


@pytest.fixture(autouse=True)
def host_env(dist_env, monkeypatch):
    """The processes these tests start see the host's two-process settings (see dist_env)."""
    for key, value in dist_env.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope='module')
def workspace(tmp_path_factory, toy_data_root):
    root = tmp_path_factory.mktemp('preemption')
    (root / 'data').symlink_to(toy_data_root, target_is_directory=True)
    (root / 'tiny_random.py').write_text(RANDOM_CONFIG)
    return root


def processes_marked(run_id: str) -> list:
    """Live processes whose environment carries ``MARK=run_id`` (launcher, workers, their
    data workers)."""
    found = []
    for entry in Path('/proc').iterdir():
        try:
            environ = (entry / 'environ').read_bytes().split(b'\0') if entry.name.isdigit() \
                else []
        except OSError:
            continue
        if f'{MARK}={run_id}'.encode() in environ and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


@pytest.mark.e2e
def test_sigterm_saves_the_iteration_and_resume_repeats_the_run(workspace):
    config = workspace / 'tiny_random.py'
    full = workspace / 'full'
    done = run(train_command(config, full, '--cfg-options', 'train_cfg.max_iters=8', gpus=2),
               workspace, workspace / 'full.log')
    assert done.returncode == 0, done.stdout[-5000:]

    # No interval checkpoint would come before iteration 1000.
    stopped, run_id = workspace / 'stopped', uuid.uuid4().hex
    job = Background(train_command(config, stopped, '--cfg-options', 'train_cfg.max_iters=1000',
                                   'default_hooks.checkpoint.interval=1000', gpus=2),
                     workspace, workspace / 'stopped.log', **{MARK: run_id})
    try:
        job.wait_for_output(r'Iter\(train\) \[\s*2/')
        # torchrun, 2 training processes, their 2 data workers (which torchrun's SIGTERM
        # reaches too: it signals each worker's process group).
        assert len(processes_marked(run_id)) == 5
        job.proc.send_signal(signal.SIGTERM)  # dist_train.sh execs torchrun: this is its pid
        start = time.monotonic()
        job.proc.wait(timeout=60)
        output = job.output()
        # Every process is gone, well within torchrun's 30 s before it would SIGKILL.
        assert not processes_marked(run_id)
        assert time.monotonic() - start < 30, output[-5000:]
    finally:
        for pid in processes_marked(run_id):
            os.kill(pid, signal.SIGKILL)
    checkpoint = last_checkpoint(stopped)
    step = int(re.fullmatch(r'iter_(\d+)\.pth', checkpoint.name).group(1))
    assert 2 <= step < 8, output[-5000:]
    assert sorted(p.name for p in stopped.glob('*.pth')) == [checkpoint.name]
    assert re.search(rf'SIGTERM received [\d.]+ s ago: stopped after iteration {step}, saved '
                     rf'\S*{checkpoint.name}; continue with --resume .* Exit code 75\.', output)
    assert output.count('SIGTERM received: stopping after this iteration') == 2  # both ranks
    assert 'DataLoader worker' not in output
    assert '[rank0]: Traceback' not in output and '[rank1]: Traceback' not in output

    done = run(train_command(config, stopped, '--resume', '--cfg-options',
                             'train_cfg.max_iters=8', gpus=2), workspace,
               workspace / 'resumed.log')
    assert done.returncode == 0, done.stdout[-5000:]
    full_losses, resumed_losses = iteration_losses(full), iteration_losses(stopped)
    assert sorted(full_losses) == list(range(1, 9))
    assert {k: v for k, v in resumed_losses.items() if k > step} == \
        {k: v for k, v in full_losses.items() if k > step}
