"""Processes of the tests that run the tools, kill launchers and workers: state, waiting, and
a tool started in the background with every process of it findable."""
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

MARK = 'SEC_MM_FAULT_TEST_RUN'


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (an unreaped zombie has ended)."""
    try:
        stat = Path(f'/proc/{pid}/stat').read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(')', 1)[1].split()[0] not in ('Z', 'X')


def processes_of(run_id: str) -> list:
    """The live processes whose environment carries ``MARK=run_id``: the whole run, whatever
    session or parent they have."""
    found = []
    for entry in Path('/proc').iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / 'environ').read_bytes().split(b'\0')
        except OSError:
            continue
        if f'{MARK}={run_id}'.encode() in environ and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Run:
    """A tool started in the background, its output in a file."""

    def __init__(self, command, cwd, log: Path, **env):
        self.run_id = uuid.uuid4().hex
        self.log = log
        full_env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1',
                        **{MARK: self.run_id}, **{k: str(v) for k, v in env.items()})
        with open(log, 'w') as out:
            self.proc = subprocess.Popen([str(c) for c in command], cwd=cwd, env=full_env,
                                         stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors='replace')

    def wait_for_output(self, pattern: str, timeout: float = 400) -> None:
        found = wait_for(lambda: re.search(pattern, self.output()) or self.proc.poll() is not None,
                         timeout, interval=0.5)
        assert found and re.search(pattern, self.output()), (
            f'no {pattern!r} in the output:\n{self.output()[-6000:]}')

    def cleanup(self) -> None:
        for pid in processes_of(self.run_id):
            os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
