"""sec_mm.engine.lifetime: the processes of a run end with the process that started them."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from process_helpers import alive
from sec_mm.engine.lifetime import LAUNCHER_PID_ENV

REPO = Path(__file__).resolve().parents[2]
# Several Python processes importing sec_mm each.
pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not sys.platform.startswith('linux'),
                                 reason='the parent-death signal is Linux-only')]

# A launched process: binds itself to its launcher, forks a "dataloader worker", reports both
# pids and waits.
WORKER = textwrap.dedent('''
    import os, sys, time
    from sec_mm.engine.lifetime import bind_to_launcher
    bind_to_launcher(sys.argv[1])
    child = os.fork()
    if child == 0:
        time.sleep(600)
        os._exit(0)
    print(os.getpid(), child, flush=True)
    time.sleep(600)
''')
# The launcher: starts the worker and waits (a stand-in for torchrun's agent).
LAUNCHER = textwrap.dedent('''
    import subprocess, sys, time
    subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]], start_new_session=True)
    time.sleep(600)
''')


def wait_until_gone(pids, timeout=10.) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def env(**extra):
    return dict(os.environ, PYTHONPATH=f'{REPO}{os.pathsep}{os.environ.get("PYTHONPATH", "")}',
                **extra)


@pytest.mark.parametrize('launcher', ['pytorch', 'none'])
def test_sigkilled_launcher_takes_its_workers_along(launcher):
    run_env = env()
    run_env.pop(LAUNCHER_PID_ENV, None)
    parent = subprocess.Popen([sys.executable, '-c', LAUNCHER, WORKER, launcher], env=run_env,
                              stdout=subprocess.PIPE, text=True)
    worker = forked = None
    try:
        worker, forked = (int(p) for p in parent.stdout.readline().split())
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        if launcher == 'pytorch':
            assert wait_until_gone([worker, forked]) == []
        else:
            # Without a launcher the parent is a user's shell: the run must outlive it (nohup).
            time.sleep(1)
            assert alive(worker)
            os.kill(worker, signal.SIGKILL)
            # ... while what the run forked ends with the run.
            assert wait_until_gone([worker, forked]) == []
    finally:
        for pid in (worker, forked):
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()


def test_worker_whose_launcher_is_already_gone_ends_at_once():
    # The launcher pid tools/dist_train.sh exports is not this worker's parent: the launcher
    # died before the worker got going.
    done = subprocess.run([sys.executable, '-c', WORKER, 'pytorch'], timeout=300,
                          env=env(**{LAUNCHER_PID_ENV: '1'}), capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    assert done.stdout == ''
