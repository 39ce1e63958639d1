"""PreemptionHook on a real Runner (toy_run.py) in this process: a stop signal sent during an
iteration ends the run after it with a checkpoint and exit code 75, and --resume continues.
The multi-process case (torchrun, dist_train.sh) is test_tools/test_preemption.py."""
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mmengine.hooks import Hook

from sec_mm.engine.hooks import PREEMPTED_EXIT_CODE, ExactResumeHook, PreemptionHook
from toy_run import LossRecorder, toy_runner

pytestmark = pytest.mark.usefixtures('single_thread')
REPO = Path(__file__).resolve().parents[2]


class SignalDuring(Hook):
    """Sends ``sig`` to this process at the start of iteration ``iteration`` (1-based)."""

    def __init__(self, iteration: int, sig: int = signal.SIGTERM) -> None:
        self.iteration, self.sig = iteration, sig

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.iter + 1 == self.iteration:
            os.kill(os.getpid(), self.sig)


def stopped_run(work_dir, iteration: int, sig=signal.SIGTERM, extra_hooks=(), **kwargs):
    """Train with a stop signal during ``iteration``; the losses, exit code and log."""
    hook, recorder = PreemptionHook(), LossRecorder()
    runner = toy_runner(work_dir, hooks=[recorder, ExactResumeHook(), hook,
                                         SignalDuring(iteration, sig), *extra_hooks], **kwargs)
    try:
        with pytest.raises(SystemExit) as stop:
            runner.train()
    finally:
        hook.restore_signal_handlers()
    log = next(work_dir.glob('*/*.log')).read_text()
    return recorder.losses, stop.value.code, log


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGUSR1], ids=['SIGTERM', 'SIGUSR1'])
def test_a_stop_signal_saves_the_iteration_and_exits_75(tmp_path, sig):
    # Checkpoints every 100 iterations: none would be saved before iteration 6.
    losses, code, log = stopped_run(tmp_path / 'run', 3, sig, max_iters=6, interval=100)
    assert code == PREEMPTED_EXIT_CODE == 75
    assert sorted(losses) == [1, 2, 3]  # iteration 3 was finished
    checkpoint = tmp_path / 'run' / 'iter_3.pth'
    assert (tmp_path / 'run' / 'last_checkpoint').read_text() == str(checkpoint)
    assert torch.load(checkpoint, weights_only=True)['meta']['iter'] == 3
    assert (f'{signal.Signals(sig).name} received 0.0 s ago: stopped after iteration 3, saved '
            f'{checkpoint}; continue with --resume') in log
    assert signal.getsignal(sig) is signal.SIG_DFL  # handed back

    # --resume continues where it stopped, as if never stopped.
    full = LossRecorder()
    toy_runner(tmp_path / 'full', hooks=[full, ExactResumeHook()], max_iters=6).train()
    resumed = LossRecorder()
    toy_runner(tmp_path / 'run', hooks=[resumed, ExactResumeHook()], max_iters=6,
               resume_from=str(checkpoint)).train()
    assert resumed.losses == {k: v for k, v in full.losses.items() if k > 3}


class SaveCounter(Hook):

    def __init__(self) -> None:
        self.saves = []

    def before_save_checkpoint(self, runner, checkpoint) -> None:
        self.saves.append(checkpoint['meta']['iter'])


def test_an_interval_checkpoint_is_not_saved_twice(tmp_path):
    counter = SaveCounter()
    _, code, log = stopped_run(tmp_path, 2, max_iters=6, interval=1, extra_hooks=[counter])
    assert code == 75
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['iter_1.pth', 'iter_2.pth']
    assert counter.saves == [1, 2]
    assert f'saved {tmp_path / "iter_2.pth"}' in log


def test_epoch_based_runs_save_the_iteration_or_the_epoch(tmp_path):
    # 4 iterations per epoch, epoch checkpoints.
    _, code, _ = stopped_run(tmp_path / 'mid', 6, max_epochs=3, by_epoch=True)
    assert code == 75
    assert sorted(p.name for p in (tmp_path / 'mid').glob('*.pth')) == ['epoch_1.pth',
                                                                         'iter_6.pth']
    meta = torch.load(tmp_path / 'mid' / 'iter_6.pth', weights_only=True)['meta']
    assert (meta['epoch'], meta['iter']) == (1, 6)  # 1 epoch and 6 iterations done
    # The last iteration of an epoch: the epoch's checkpoint, as its hook names it.
    _, code, log = stopped_run(tmp_path / 'end', 8, max_epochs=3, by_epoch=True)
    assert code == 75
    assert sorted(p.name for p in (tmp_path / 'end').glob('*.pth')) == ['epoch_1.pth',
                                                                         'epoch_2.pth']
    assert 'stopped after iteration 8 (epoch 2), saved' in log


def test_without_a_checkpoint_hook_it_stops_and_says_nothing_was_saved(tmp_path):
    hook = PreemptionHook()
    runner = toy_runner(tmp_path, hooks=[hook, SignalDuring(2)], max_iters=6,
                        checkpoints=False)
    try:
        with pytest.raises(SystemExit) as stop:
            runner.train()
    finally:
        hook.restore_signal_handlers()
    assert stop.value.code == 75 and not list(tmp_path.glob('*.pth'))
    assert 'nothing saved: the run has no checkpoint hook' in next(
        tmp_path.glob('*/*.log')).read_text()


def _sleep():
    time.sleep(60)


def test_forked_children_ignore_stop_signals_from_others_but_not_from_their_parent():
    hook = PreemptionHook()
    try:
        child = multiprocessing.get_context('fork').Process(target=_sleep, daemon=True)
        child.start()
        time.sleep(0.5)
        # What torchrun's killpg and Slurm do: a signal from another process.
        subprocess.run(['kill', '-TERM', str(child.pid)], check=True)
        subprocess.run(['kill', '-USR1', str(child.pid)], check=True)
        time.sleep(0.5)
        assert child.is_alive()
        # What DataLoader shutdown and multiprocessing at exit do: the parent's SIGTERM.
        child.terminate()
        child.join(5)
        assert child.exitcode == 0
    finally:
        hook.restore_signal_handlers()
        if child.is_alive():
            child.kill()


@pytest.mark.parametrize('kwargs,match', [
    (dict(signals=['SIGNOPE']), "signals must be signal names or numbers .*; got 'SIGNOPE'"),
    (dict(signals=[999]), 'signals must be .*; got 999'),
    (dict(exit_code=256), r'exit_code must be an int in \[0, 255\]; got 256'),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=f'PreemptionHook: {match}'):
        PreemptionHook(**kwargs)


def test_outside_training_a_stop_signal_ends_the_process_at_once():
    # A test run, or a run still being built: nothing to save, the default action.
    code = ('import os, signal, time\n'
            'from sec_mm.engine.hooks import PreemptionHook\n'
            'hook = PreemptionHook()\n'
            'os.kill(os.getpid(), signal.SIGTERM)\n'
            'time.sleep(30)\n')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == -signal.SIGTERM, done.stderr[-3000:]
