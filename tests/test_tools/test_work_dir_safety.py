"""The work dir is the truth, one run per work dir, and no checkpoint runs code: the real
tools (tools/train.py, tools/dist_train.sh, tools/test.py) on the tiny SECViT classifier and
the toy ImageNet set."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from net_helpers import free_port
from process_helpers import Run
from sec_mm.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / 'tools'
TINY = REPO / 'tests/fixtures/configs/tiny-secvit_toy-imagenet.py'


@pytest.fixture(autouse=True)
def host_env(dist_env, monkeypatch):
    for key, value in dist_env.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope='module')
def workspace(tmp_path_factory, toy_data_root) -> Path:
    root = tmp_path_factory.mktemp('work_dirs')
    (root / 'data').symlink_to(toy_data_root, target_is_directory=True)
    return root


def tool(workspace, *args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=workspace, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))


def trained_iters(log: str) -> list:
    return [int(i) for i in re.findall(r'Iter\(train\) \[\s*(\d+)/', log)]


@pytest.mark.e2e
def test_a_second_run_into_a_work_dir_in_use_stops_at_once(workspace):
    work_dir = workspace / 'in_use'
    first = Run([sys.executable, TOOLS / 'train.py', TINY, '--work-dir', work_dir,
                 '--cfg-options', 'train_cfg.max_iters=100000'], workspace,
                workspace / 'in_use_first.log')
    try:
        first.wait_for_output(r'Iter\(train\) \[\s*1/')
        logs_before = sorted(work_dir.glob('*/*.log'))
        second = tool(workspace, TOOLS / 'train.py', TINY, '--work-dir', work_dir,
                      '--resume')
        assert second.returncode != 0
        assert f'Work dir {work_dir} is in use by another run' in second.stdout, \
            second.stdout[-3000:]
        assert f'pid {first.proc.pid}' in second.stdout
        # The same with two processes: every rank ends, and nothing was written.
        second = subprocess.run(
            ['bash', str(TOOLS / 'dist_train.sh'), str(TINY), '2', '--work-dir', str(work_dir),
             '--resume'], cwd=workspace, text=True, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, timeout=300,
            env=dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1',
                     PORT=str(free_port())))
        assert second.returncode != 0
        assert 'is in use by another run' in second.stdout, second.stdout[-3000:]
        assert sorted(work_dir.glob('*/*.log')) == logs_before
        assert first.proc.poll() is None  # the first run trains on
    finally:
        first.cleanup()


@pytest.mark.e2e
def test_a_moved_work_dir_resumes_and_a_fresh_start_over_checkpoints_is_refused(workspace):
    old = workspace / 'before_move'
    done = tool(workspace, TOOLS / 'train.py', TINY, '--work-dir', old, '--cfg-options',
                'train_cfg.max_iters=4')
    assert done.returncode == 0, done.stdout[-3000:]
    new = workspace / 'after_move'
    old.rename(new)

    refused = tool(workspace, TOOLS / 'train.py', TINY, '--work-dir', new)
    assert refused.returncode != 0
    assert 'holds checkpoints (iter_4.pth, iter_3.pth, iter_2.pth' in refused.stdout
    assert '--start-fresh' in refused.stdout
    assert sorted(p.name for p in new.glob('iter_*.pth')) == ['iter_2.pth', 'iter_3.pth',
                                                               'iter_4.pth']

    done = tool(workspace, TOOLS / 'train.py', TINY, '--work-dir', new, '--resume',
                '--cfg-options', 'train_cfg.max_iters=6')
    assert done.returncode == 0, done.stdout[-3000:]
    assert 'resumed epoch: 0, iter: 4' in done.stdout
    assert trained_iters(done.stdout) == [5, 6]
    assert not old.exists()  # nothing went back to the old place
    assert load_checkpoint(str(new / 'iter_6.pth'))['meta']['iter'] == 6


class Payload:

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f'open({self.marker!r}, "w").close()', )


@pytest.mark.e2e
def test_no_tool_runs_code_from_a_checkpoint(workspace):
    marker = workspace / 'code_ran'
    payload = workspace / 'payload.pth'
    torch.save({'state_dict': {}, 'meta': Payload(marker)}, payload)
    runs = {
        'test.py': (TOOLS / 'test.py', TINY, payload, '--work-dir', workspace / 'payload_test'),
        'train.py --resume PATH': (TOOLS / 'train.py', TINY, '--work-dir',
                                   workspace / 'payload_resume', '--resume', payload),
        'train.py load_from': (TOOLS / 'train.py', TINY, '--work-dir',
                               workspace / 'payload_load_from', '--cfg-options',
                               f'load_from={payload}'),
    }
    for name, args in runs.items():
        done = tool(workspace, *args)
        assert done.returncode != 0, (name, done.stdout[-3000:])
        assert 'refused: the checkpoint holds objects that are not weights (exec)' in \
            done.stdout, (name, done.stdout[-3000:])
        assert not marker.exists(), f'{name} ran the code of the checkpoint'
