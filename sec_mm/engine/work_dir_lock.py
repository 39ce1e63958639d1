"""One training run per work dir.

Two runs started into the same work dir (a job submitted twice, a requeue while the first
still runs, a copied command line) both write its log, config and checkpoints: the log holds
both runs' lines interleaved, and the checkpoints kept at the end are whichever run saved
last. :class:`WorkDirLock` is taken by the first process of a run (global rank 0) before the
Runner writes anything; a second run stops at once, naming the work dir and the holder.

The lock is the file ``<work_dir>/train.lock``: JSON naming the holder (pid, host, start
time, command, Slurm job), held with ``flock`` for the life of the process and touched every
:data:`HEARTBEAT` seconds. The kernel drops the ``flock`` of a process however it ends, so on
one host a dead holder is always recognised and its lock is taken over with a warning. On
file systems whose ``flock`` does not reach other hosts, a holder on another host counts as
gone once its heartbeat is older than :data:`STALE_AFTER` seconds, or at once when the new
process belongs to the same Slurm job (a requeue) or torchrun run (a restart).
"""
import datetime
import fcntl
import json
import logging
import os
import os.path as osp
import socket
import sys
import threading
import time
from typing import Optional

from mmengine.logging import print_log

__all__ = ['LOCK_NAME', 'HEARTBEAT', 'STALE_AFTER', 'WorkDirLockedError', 'WorkDirLock']

LOCK_NAME = 'train.lock'
#: Seconds between two touches of the lock file by its holder.
HEARTBEAT = 30.
#: Seconds after which the lock of a holder on another host counts as abandoned.
STALE_AFTER = 300.
# Environment variables that stay the same when a scheduler restarts the same job.
_JOB_IDS = ('SLURM_JOB_ID', 'TORCHELASTIC_RUN_ID')


class WorkDirLockedError(RuntimeError):
    """Another run holds the work dir."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _describe(holder: dict) -> str:
    job = ', '.join(f'{k}={holder[k]}' for k in _JOB_IDS if holder.get(k))
    return (f"pid {holder.get('pid')} on host {holder.get('host')}, started "
            f"{holder.get('started')}{f' ({job})' if job else ''}: "
            f"{' '.join(holder.get('command', []))}")


class WorkDirLock:
    """The lock of a work dir, held by this process.

    Use :meth:`acquire`; :meth:`release` (also run at exit) gives it back.

    Args:
        work_dir (str): The run's work dir.
    """

    def __init__(self, work_dir: str) -> None:
        self.work_dir = work_dir
        self.path = osp.join(work_dir, LOCK_NAME)
        self._fd: Optional[int] = None
        self._stop = threading.Event()

    @classmethod
    def acquire(cls, work_dir: str) -> 'WorkDirLock':
        """Take the lock of ``work_dir`` (created if missing) for this process.

        Raises:
            WorkDirLockedError: A live run holds it; the message names the holder and what to do.
        """
        lock = cls(work_dir)
        lock._acquire()
        return lock

    def _acquire(self) -> None:
        os.makedirs(self.work_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._held_error(self._read(fd), 'it holds the lock') from None
            holder = self._read(fd)
            if holder:
                self._take_over(holder, age=time.time() - os.fstat(fd).st_mtime)
            me = dict(pid=os.getpid(), host=socket.gethostname(),
                      started=datetime.datetime.now().isoformat(timespec='seconds'),
                      command=[osp.basename(sys.executable), *sys.argv],
                      **{k: os.environ[k] for k in _JOB_IDS if os.environ.get(k)})
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + '\n').encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        threading.Thread(target=self._beat, name='work-dir-lock', daemon=True).start()
        import atexit
        atexit.register(self.release)

    @staticmethod
    def _read(fd: int) -> dict:
        data = os.pread(fd, 1 << 16, 0)
        try:
            holder = json.loads(data.decode() or '{}')
        except (UnicodeDecodeError, json.JSONDecodeError):
            return {'unreadable': data[:40]}
        return holder if isinstance(holder, dict) else {}

    def _held_error(self, holder: dict, why: str) -> WorkDirLockedError:
        return WorkDirLockedError(
            f'Work dir {self.work_dir} is in use by another run ({why}): {_describe(holder)}. '
            'Two runs in one work dir mix their logs and checkpoints. Wait for that run to '
            'end, or train into another --work-dir. If that run is gone (its host is down), '
            f'delete {self.path}.')

    def _take_over(self, holder: dict, age: float) -> None:
        same_host = holder.get('host') == socket.gethostname()
        same_job = any(holder.get(k) and holder.get(k) == os.environ.get(k) for k in _JOB_IDS)
        if 'unreadable' in holder:
            print_log(f'Taking over the lock of work dir {self.work_dir}: {self.path} holds '
                      f"no lock record ({holder['unreadable']!r}).", logger='current',
                      level=logging.WARNING)
            return
        if same_host:
            # Getting the flock means its holder is gone, unless the file was replaced under
            # a live holder (deleted and created again): then its pid still runs.
            pid = holder.get('pid')
            if isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid):
                raise self._held_error(holder, 'its process is alive')
            why = 'its process is gone'
        elif same_job:
            why = 'it is an earlier start of this same job'
        elif age < STALE_AFTER:
            raise self._held_error(
                holder, f'its last heartbeat was {age:.0f} s ago, and a lock of another host '
                f'counts as abandoned after {STALE_AFTER:.0f} s')
        else:
            why = f'its last heartbeat was {age:.0f} s ago'
        print_log(f'Taking over the lock of work dir {self.work_dir} from {_describe(holder)}: '
                  f'{why}.', logger='current', level=logging.WARNING)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        """Give the lock back (idempotent).

        The file is emptied rather than removed: a process that opened it meanwhile would
        otherwise hold a lock on a file nobody else sees.
        """
        if self._fd is None:
            return
        self._stop.set()
        try:
            if self._read(self._fd).get('pid') == os.getpid():
                os.ftruncate(self._fd, 0)
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None
