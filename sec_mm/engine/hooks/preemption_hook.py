"""Stop training on a signal (preemption, a time limit) with a checkpoint of where it was.

A scheduler ends a job with ``SIGTERM`` (Slurm at preemption and at the time limit, Kubernetes,
``torchrun`` passing on its own ``SIGTERM``), and can warn ahead with another signal (Slurm's
``--signal=USR1@180``). By default these end a training process at once, and everything since
the last interval checkpoint is lost. With :class:`PreemptionHook` every rank finishes the
iteration it is in, the ranks agree to stop (one small all-reduce per iteration), a checkpoint
of that iteration is saved through the run's checkpoint hook (atomically with
:class:`~sec_mm.engine.hooks.AtomicCheckpointHook`), and every rank exits with
:data:`PREEMPTED_EXIT_CODE`. ``--resume`` continues from that checkpoint.

Data loader workers are in the training process's process group (torchrun sends its
``SIGTERM`` to that group) and in its Slurm step (Slurm signals every process of the step). By
default they die from it, and the training process then fails with "DataLoader worker is
killed by signal" before it can save. Processes forked after the hook is built (the workers
of the data loaders the Runner builds later) ignore the stop signals from anyone but their
parent, which still ends them as before.
"""
import logging
import os
import signal
import threading
import time
from contextlib import nullcontext
from typing import Dict, Optional, Sequence, Set, Tuple, Union

import torch
from mmengine.dist import all_reduce, barrier, get_world_size, is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop

from ..atomic_backend import write_atomic
from .exact_resume_hook import ExactResumeHook

__all__ = ['PREEMPTED_EXIT_CODE', 'DEFAULT_STOP_SIGNALS', 'PreemptionHook']

#: Exit code of every process of a run stopped by a signal after saving (sysexits'
#: EX_TEMPFAIL: a temporary failure, try again), told apart from a failure (1) and from a
#: process killed by a signal without this hook (128 + the signal).
PREEMPTED_EXIT_CODE = 75
#: What Slurm, Kubernetes and torchrun send to stop a job, and Slurm's usual early warning.
DEFAULT_STOP_SIGNALS = ('SIGTERM', 'SIGUSR1')

_shielded: Set[int] = set()  # signals forked children hold off (see _shield_forked_children)
_fork_hook_registered = False


def _signal_number(sig: Union[str, int]) -> int:
    if isinstance(sig, str):
        number = getattr(signal, sig if sig.startswith('SIG') else f'SIG{sig}', None)
        if isinstance(number, signal.Signals):
            return int(number)
    elif isinstance(sig, int) and not isinstance(sig, bool):
        try:
            return int(signal.Signals(sig))
        except ValueError:
            pass
    raise ValueError(f'PreemptionHook: signals must be signal names or numbers such as '
                     f"'SIGTERM' or 'SIGUSR1'; got {sig!r}.")


def _serve_shielded_signals(signals: frozenset, parent: int) -> None:
    # The parent ending its worker (DataLoader shutdown, multiprocessing at exit) sends
    # SIGTERM: obey it, as torch's worker handler does; from anyone else, ignore.
    while True:
        info = signal.sigwaitinfo(signals)
        if info.si_signo == signal.SIGTERM and info.si_pid == parent:
            os._exit(0)


def _after_fork_in_child() -> None:
    if not _shielded:
        return
    signals = frozenset(_shielded)
    # Blocked signals stay pending whatever handler the child installs (torch's workers
    # install one for SIGTERM); a thread takes them with sigwaitinfo, which tells the sender.
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    threading.Thread(target=_serve_shielded_signals, args=(signals, os.getppid()),
                     name='sec_mm-stop-signal-shield', daemon=True).start()


def _shield_forked_children(signals: Sequence[int]) -> bool:
    """Make processes forked from now on ignore ``signals`` unless their parent sends SIGTERM."""
    global _fork_hook_registered
    if not hasattr(signal, 'sigwaitinfo') or not hasattr(os, 'register_at_fork'):
        return False
    if not _fork_hook_registered:
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook_registered = True
    _shielded.update(signals)
    return True


class PreemptionHook(Hook):
    """On a stop signal: finish the iteration, save a checkpoint, exit with a documented code.

    Every rank of the run stops after the same iteration (the one in progress when the first
    rank received the signal), a checkpoint of it is saved, all ranks wait for the file, and
    every process exits with ``exit_code`` (:data:`PREEMPTED_EXIT_CODE`, 75). The time from the
    signal to the exit is at most one training iteration plus one checkpoint save (a signal
    during validation is served after it and the next iteration). A second stop signal ends the
    process at once, as without the hook.

    Where the checkpoint goes: iteration-based checkpoint hooks save ``iter_N.pth`` as at
    their interval (nothing is saved twice). In epoch-based training the checkpoint of an
    epoch's last iteration is the epoch's (``epoch_N.pth``); in the middle of an epoch it is
    ``iter_N.pth`` (iterations so far), which needs :class:`ExactResumeHook` to resume the
    epoch where it stopped. ``last_checkpoint`` names it. A run without a checkpoint hook exits
    without a save, and says so.

    The signal handlers are installed when the hook is built (with the Runner, before it builds
    its data loaders), and removed after the run. Outside training (building the run, a test
    run) a stop signal ends the process at once, as without the hook. A signal during
    validation, or during the replay of the batches before the checkpoint of a resumed
    iteration-based run, is served after the next training iteration.

    Args:
        signals (Sequence[str | int]): The stop signals. Defaults to
            :data:`DEFAULT_STOP_SIGNALS` (SIGTERM, SIGUSR1).
        exit_code (int): Exit code after a stop. Defaults to :data:`PREEMPTED_EXIT_CODE`.
    """

    priority = 'LOWEST'  # after the checkpoint hook: an interval save is not repeated

    def __init__(self, signals: Sequence[Union[str, int]] = DEFAULT_STOP_SIGNALS,
                 exit_code: int = PREEMPTED_EXIT_CODE) -> None:
        if isinstance(signals, (str, int)):
            signals = [signals]
        self.signals = [_signal_number(s) for s in signals]
        if isinstance(exit_code, bool) or not isinstance(exit_code, int) or \
                not 0 <= exit_code <= 255:
            raise ValueError(f'PreemptionHook: exit_code must be an int in [0, 255]; got '
                             f'{exit_code!r}.')
        self.exit_code = exit_code
        self._received: Optional[Tuple[int, float]] = None
        self._previous: Dict[int, object] = {}
        self._stop_after_epoch: Optional[int] = None
        self._training = False
        self._pid = os.getpid()
        self._install()

    # -- signals ---------------------------------------------------------------------------
    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            print_log('PreemptionHook: built outside the main thread, where signal handlers '
                      'cannot be set; stop signals end the run at once.', logger='current',
                      level=logging.WARNING)
            return
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        _shield_forked_children(self.signals)

    def restore_signal_handlers(self) -> None:
        """Give the stop signals back their handlers from before the hook (after the run)."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
            _shielded.discard(sig)
        self._previous = {}

    def _on_signal(self, signum: int, frame) -> None:
        if self._training and self._received is None and os.getpid() == self._pid:
            self._received = (signum, time.monotonic())
            # os.write: no buffered stream may be entered from a signal handler.
            os.write(2, f'{signal.Signals(signum).name} received: stopping after this '
                        'iteration with a checkpoint.\n'.encode())
            return
        # Again, or outside training (building, testing): end now, as without the hook.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def _agree(self) -> int:
        """The stop signal received by any rank (0 if none): every rank gets the same answer."""
        local = self._received[0] if self._received is not None else 0
        if get_world_size() < 2:
            return local
        flag = torch.tensor([local], dtype=torch.int64)
        all_reduce(flag, op='max')
        return int(flag.item())

    # -- training --------------------------------------------------------------------------
    def before_train(self, runner) -> None:
        self._training = True
        hook = self._checkpoint_hook(runner)
        if isinstance(runner.train_loop, EpochBasedTrainLoop) and hook is not None and \
                hook.by_epoch and not any(isinstance(h, ExactResumeHook) for h in runner.hooks):
            print_log('PreemptionHook: a stop in the middle of an epoch saves iter_N.pth, which '
                      'resumes in the middle of the epoch only with ExactResumeHook (mmengine '
                      "alone starts the epoch over); add dict(type='ExactResumeHook') to "
                      'custom_hooks.', logger='current', level=logging.WARNING)

    def after_train(self, runner) -> None:
        self._training = False

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        sig = self._agree()
        if not sig:
            return
        loop = runner.train_loop
        hook = self._checkpoint_hook(runner)
        if isinstance(loop, EpochBasedTrainLoop) and hook is not None and hook.by_epoch and \
                batch_idx + 1 == len(loop.dataloader):
            self._stop_after_epoch = sig  # the epoch's own checkpoint, in after_train_epoch
            return
        self._stop(runner, sig, self._save_iteration(runner, hook), runner.iter + 1)

    def after_train_epoch(self, runner) -> None:
        if self._stop_after_epoch is None:
            return
        hook = self._checkpoint_hook(runner)
        path = self._checkpoint_path(hook, runner.epoch + 1)
        if hook.last_ckpt != path:
            hook._save_checkpoint(runner)
        self._stop(runner, self._stop_after_epoch, hook.last_ckpt, runner.iter)

    def after_run(self, runner) -> None:
        self.restore_signal_handlers()

    # -- saving and stopping ---------------------------------------------------------------
    @staticmethod
    def _checkpoint_hook(runner) -> Optional[CheckpointHook]:
        return next((h for h in runner.hooks if isinstance(h, CheckpointHook)), None)

    @staticmethod
    def _checkpoint_path(hook: CheckpointHook, step: int) -> str:
        return hook.file_backend.join_path(hook.out_dir, hook.filename_tmpl.format(step))

    def _save_iteration(self, runner, hook: Optional[CheckpointHook]) -> Optional[str]:
        """Save the iteration that just ended (unless its checkpoint is already saved)."""
        if hook is None:
            return None
        step = runner.iter + 1
        if not hook.by_epoch:
            if hook.last_ckpt != self._checkpoint_path(hook, step):
                hook._save_checkpoint(runner)
            return hook.last_ckpt
        # An epoch-based hook in the middle of an epoch: a checkpoint by iteration.
        name = f'iter_{step}.pth'
        exact = next((h for h in runner.hooks if isinstance(h, ExactResumeHook)), None)
        with exact.every_ranks_states() if exact is not None else nullcontext():
            runner.save_checkpoint(
                hook.out_dir, name, save_optimizer=hook.save_optimizer,
                save_param_scheduler=hook.save_param_scheduler,
                meta=dict(epoch=runner.epoch, iter=step), by_epoch=False,
                backend_args=hook.backend_args, **hook.args)
        path = hook.file_backend.join_path(hook.out_dir, name)
        hook.last_ckpt = path
        runner.message_hub.update_info('last_ckpt', path)
        if is_main_process():
            write_atomic(os.path.join(runner.work_dir, 'last_checkpoint'), path.encode())
        return path

    def _stop(self, runner, sig: int, path: Optional[str], iteration: int) -> None:
        barrier()  # the saving rank has written the file before any rank exits
        name = signal.Signals(sig).name
        since = (f' {time.monotonic() - self._received[1]:.1f} s ago'
                 if self._received is not None else ' (by another rank)')
        where = f'iteration {iteration}'
        if isinstance(runner.train_loop, EpochBasedTrainLoop):
            where += f' (epoch {runner.epoch + 1})'
        if path is None:
            saved = ('nothing saved: the run has no checkpoint hook; the last checkpoint, if '
                     'any, is where --resume continues')
        else:
            saved = f'saved {path}; continue with --resume (same config and work dir)'
        print_log(f'{name} received{since}: stopped after {where}, {saved}. Exit code '
                  f'{self.exit_code}.', logger='current', level=logging.WARNING)
        self.restore_signal_handlers()
        raise SystemExit(self.exit_code)
