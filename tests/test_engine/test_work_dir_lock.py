"""sec_mm.engine.work_dir_lock: one training run per work dir."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from sec_mm.engine.work_dir_lock import (LOCK_NAME, STALE_AFTER, WorkDirLock,
                                         WorkDirLockedError)

HOLD = '''
import sys, time
from sec_mm.engine.work_dir_lock import WorkDirLock
WorkDirLock.acquire(sys.argv[1])
print('held', flush=True)
time.sleep(600)
'''


@pytest.fixture
def log(tmp_path):
    """A fresh current mmengine logger writing to a file; reads the file."""
    from mmengine.logging import MMLogger
    path = tmp_path / 'current.log'
    MMLogger.get_instance(f'work_dir_lock-{uuid.uuid4().hex}', log_file=str(path))
    return path.read_text


def start_holder(work_dir, repo_root):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(repo_root), os.environ.get('PYTHONPATH')])))
    holder = subprocess.Popen([sys.executable, '-c', HOLD, str(work_dir)], env=env,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == 'held'
    return holder


def test_acquire_names_this_process_and_release_frees_it(tmp_path):
    lock = WorkDirLock.acquire(str(tmp_path / 'run'))
    holder = json.loads((tmp_path / 'run' / LOCK_NAME).read_text())
    assert holder['pid'] == os.getpid() and holder['host'] == socket.gethostname()
    assert holder['started'] and holder['command']
    lock.release()
    lock.release()  # idempotent
    WorkDirLock.acquire(str(tmp_path / 'run')).release()


def test_a_live_holder_stops_a_second_run_and_a_dead_one_is_taken_over(
        tmp_path, repo_root, log):
    holder = start_holder(tmp_path / 'run', repo_root)
    try:
        started = time.monotonic()
        with pytest.raises(WorkDirLockedError) as error:
            WorkDirLock.acquire(str(tmp_path / 'run'))
        assert time.monotonic() - started < 5  # at once, no waiting
        message = str(error.value)
        for part in (str(tmp_path / 'run'), f'pid {holder.pid}', socket.gethostname(),
                     'another --work-dir', str(tmp_path / 'run' / LOCK_NAME)):
            assert part in message, (part, message)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # SIGKILL leaves the file naming the dead holder: taken over, with a warning.
    assert json.loads((tmp_path / 'run' / LOCK_NAME).read_text())['pid'] == holder.pid
    lock = WorkDirLock.acquire(str(tmp_path / 'run'))
    assert f'from pid {holder.pid}' in log() and 'its process is gone' in log()
    assert json.loads((tmp_path / 'run' / LOCK_NAME).read_text())['pid'] == os.getpid()
    lock.release()


def write_foreign(path, **extra):
    path.write_text(json.dumps(dict(pid=4242, host='node-elsewhere', started='2026-12-01T10:00',
                                    command=['python', 'tools/train.py', 'x.py'], **extra)))


def test_a_holder_on_another_host(tmp_path, monkeypatch, log):
    monkeypatch.delenv('SLURM_JOB_ID', raising=False)
    monkeypatch.delenv('TORCHELASTIC_RUN_ID', raising=False)
    (tmp_path / 'run').mkdir()
    path = tmp_path / 'run' / LOCK_NAME
    write_foreign(path)
    # Its flock does not reach this host: a fresh heartbeat means it runs.
    with pytest.raises(WorkDirLockedError, match=r'last heartbeat was \d+ s ago.*node-elsewhere'):
        WorkDirLock.acquire(str(tmp_path / 'run'))
    old = time.time() - STALE_AFTER - 60
    os.utime(path, (old, old))
    WorkDirLock.acquire(str(tmp_path / 'run')).release()
    assert 'node-elsewhere' in log()
    # A requeued Slurm job (same job id, another node) takes its own lock over at once.
    write_foreign(path, SLURM_JOB_ID='777')
    monkeypatch.setenv('SLURM_JOB_ID', '777')
    WorkDirLock.acquire(str(tmp_path / 'run')).release()
    assert 'earlier start of this same job' in log()


def test_an_unreadable_lock_file_is_not_trusted(tmp_path, log):
    (tmp_path / 'run').mkdir()
    (tmp_path / 'run' / LOCK_NAME).write_bytes(b'\x00\xff garbage')
    WorkDirLock.acquire(str(tmp_path / 'run')).release()
    assert 'Taking over' in log()
