"""Processes of a run end when the process that started them ends, however it ends.

torchrun starts every training process in a session of its own, so when its agent is killed
with ``SIGKILL`` (what a scheduler or ``kill -9`` does) nothing reaches the workers: they keep
training and writing into the work dir, and the dataloader workers they forked stay behind
with them. Linux's parent-death signal closes that gap: the kernel sends it to a process the
moment its parent ends, for any reason.

- :func:`end_with_parent`: this process gets ``SIGKILL`` when its parent ends, and ends at
  once if the parent it was started by is already gone.
- :func:`end_children_with_this_process`: every process forked from this one from now on
  (dataloader workers) does the same towards this process.
- :func:`bind_to_launcher`: both, as the train and test tools use them.

On other systems these do nothing.
"""
import ctypes
import os
import signal
import sys
from typing import Optional

__all__ = ['LAUNCHER_PID_ENV', 'end_with_parent', 'end_children_with_this_process',
           'bind_to_launcher']

# tools/dist_train.sh and dist_test.sh export the pid torchrun will run under, so that a worker
# started after its launcher died can tell.
LAUNCHER_PID_ENV = 'SEC_MM_LAUNCHER_PID'
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

# Loaded here, not in a forked child: dlopen after a fork of a threaded process can deadlock.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith('linux') else None
_forking_pid = None  # the pid of the process that is forking (set just before each fork)
_children_follow = False


def _set_parent_death_signal(sig: int) -> bool:
    if _LIBC is None:
        return False
    if _LIBC.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f'prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}')
    return True


def end_with_parent(expected_parent: Optional[int] = None,
                    sig: int = signal.SIGKILL) -> bool:
    """Have the kernel end this process with ``sig`` when its parent process ends.

    The signal is bound to the parent's lifetime from this call on. A parent that ended before
    (between its starting this process and this call) left this process with another parent:
    then the process ends here with ``sig`` too.

    Args:
        expected_parent: The pid of the process that started this one, if known; the parent
            seen at the call is taken otherwise (which only covers the call itself).
        sig: The signal. ``SIGKILL`` cannot be caught, so no handler can keep the process
            alive, and a process blocked in a collective ends as well.

    Returns:
        bool: Whether the signal is in place (False off Linux).
    """
    parent = os.getppid() if expected_parent is None else expected_parent
    if not _set_parent_death_signal(sig):
        return False
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)
    return True


def _remember_forking_pid() -> None:
    global _forking_pid
    _forking_pid = os.getpid()


def _follow_forking_parent() -> None:
    # In the child, before anything else runs there.
    end_with_parent(expected_parent=_forking_pid)


def end_children_with_this_process() -> None:
    """Make every process forked from this one from now on end when this one ends; idempotent.

    Covers the dataloader workers, which mmengine forks (``mp_start_method='fork'``, the
    codebases' default): a killed training process takes them along instead of leaving them
    blocked. Workers started with ``spawn`` rely on PyTorch's own watchdog (a few seconds).
    """
    global _children_follow
    if _children_follow or _LIBC is None:
        return
    os.register_at_fork(before=_remember_forking_pid, after_in_child=_follow_forking_parent)
    _children_follow = True


def bind_to_launcher(launcher: str) -> None:
    """Tie this process, and the processes it forks, to the launcher that started it.

    With ``launcher='pytorch'`` the process is a torchrun worker: it ends when torchrun's
    agent ends, whatever ends the agent. Its forked children (dataloader workers) end with it
    under every launcher. A process started without a launcher is left alone towards its
    parent, which is a user's shell (``nohup`` runs must survive it).

    Args:
        launcher: ``'none'``, ``'pytorch'`` or ``'slurm'`` (slurm's step daemon ends its tasks
            itself).
    """
    if launcher == 'pytorch':
        expected = os.environ.get(LAUNCHER_PID_ENV)
        end_with_parent(int(expected) if expected else None)
    end_children_with_this_process()
