"""Faults of training and test runs, end to end: the real tools (torchrun where the fault is
about processes), the real Runner, the tiny SECViT classifier on the toy ImageNet set
(tests/fixtures/configs)."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from net_helpers import free_port
from process_helpers import Run, processes_of, wait_for

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / 'tools'
TINY = REPO / 'tests/fixtures/configs/tiny-secvit_toy-imagenet.py'
@pytest.fixture(autouse=True)
def host_env(dist_env, monkeypatch):
    """The processes these tests start see the host's two-process settings (see dist_env)."""
    for key, value in dist_env.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope='module')
def workspace(tmp_path_factory, toy_data_root) -> Path:
    """A folder where the config's relative ``data/toy_imagenet`` finds the toy set."""
    root = tmp_path_factory.mktemp('faults')
    (root / 'data').symlink_to(toy_data_root, target_is_directory=True)
    return root


def dist_train(workspace, work_dir, *options, gpus=2, log_name='train.log', **env) -> Run:
    return Run(['bash', TOOLS / 'dist_train.sh', TINY, gpus, '--work-dir', work_dir,
                *options], workspace, workspace / log_name, PORT=free_port(), **env)


@pytest.mark.e2e
def test_sigkill_of_the_launcher_ends_every_process_of_the_run(workspace):
    work_dir = workspace / 'killed_launcher'
    run = dist_train(workspace, work_dir, '--cfg-options', 'train_cfg.max_iters=1000',
                     log_name='killed_launcher.log')
    try:
        run.wait_for_output(r'Iter\(train\) \[\s*1/')
        members = processes_of(run.run_id)
        # torchrun, 2 training processes, their 2 dataloader workers
        assert len(members) == 5, members
        # DDP took every gradient as laid out (channels-last conv weights).
        assert 'Grad strides do not match' not in run.output()
        run.proc.send_signal(signal.SIGKILL)  # dist_train.sh execs torchrun: this is its pid
        run.proc.wait()
        assert wait_for(lambda: not processes_of(run.run_id), timeout=10), (
            processes_of(run.run_id))
        # Nothing writes into the work dir any more.
        logs = list(work_dir.glob('*/*.log'))
        sizes = [p.stat().st_size for p in logs]
        time.sleep(2)
        assert [p.stat().st_size for p in logs] == sizes
    finally:
        run.cleanup()


# tools/train.py, killed by SIGKILL in the middle of saving iteration 3's checkpoint: after
# the data is written, before the file gets its name.
KILLED_DURING_SAVE = """
import os, runpy, signal, sys
real_replace = os.replace
def replace(src, dst, *args, **kwargs):
    if str(dst).endswith('iter_3.pth'):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)
os.replace = replace
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def train(workspace, work_dir, *options, log_name, wrapper=None) -> subprocess.CompletedProcess:
    command = [sys.executable, *(['-c', wrapper] if wrapper else []), TOOLS / 'train.py', TINY,
               '--work-dir', work_dir, *options]
    with open(workspace / log_name, 'w') as out:
        return subprocess.run([str(c) for c in command], cwd=workspace, stdout=out,
                              stderr=subprocess.STDOUT, timeout=600,
                              env=dict(os.environ, OMP_NUM_THREADS='1'))


@pytest.mark.e2e
def test_kill_during_a_save_then_resume_past_a_truncated_checkpoint(workspace):
    work_dir = workspace / 'killed_save'
    done = train(workspace, work_dir, '--cfg-options', 'train_cfg.max_iters=4',
                 log_name='killed_save.log', wrapper=KILLED_DURING_SAVE)
    log = (workspace / 'killed_save.log').read_text()
    assert done.returncode == -signal.SIGKILL, log[-5000:]
    assert 'Saving checkpoint at 3 iterations' in log
    # Nothing partial under a checkpoint name; last_checkpoint names a complete file.
    assert sorted(p.name for p in work_dir.glob('*.pth')) == ['iter_1.pth', 'iter_2.pth']
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / 'iter_2.pth')
    assert len(list(work_dir.glob('.iter_3.pth.*.part'))) == 1  # hidden, never named

    # The newest checkpoint gets cut short (as an in-place writer would have left it).
    newest = work_dir / 'iter_2.pth'
    data = newest.read_bytes()
    newest.write_bytes(data[:len(data) // 2])
    done = train(workspace, work_dir, '--resume', '--cfg-options', 'train_cfg.max_iters=3',
                 log_name='resumed.log')
    log = (workspace / 'resumed.log').read_text()
    assert done.returncode == 0, log[-5000:]
    assert f'checkpoint {newest} is incomplete' in log
    assert f'resuming from {work_dir / "iter_1.pth"}' in log
    assert 'resumed epoch: 0, iter: 1' in log
    assert [int(i) for i in re.findall(r'Iter\(train\) \[\s*(\d+)/', log)] == [2, 3]
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / 'iter_3.pth')
    # The killed save's temporary file is cleaned up; the cut-short iter_2.pth, which this run
    # did not write, is kept aside rather than overwritten.
    assert not list(work_dir.glob('.iter_3.pth.*.part'))
    assert 'left by a save that was killed' in log
    assert [p.stat().st_size for p in work_dir.glob('iter_2.before-*.pth')] == [len(data) // 2]


DET = REPO / 'configs/detection/secvit/toy/mask-rcnn_secvit-t_fpn_toy-coco.py'


@pytest.fixture(scope='module')
def det_t_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of the toy SECViT-T Mask R-CNN (fresh weights: only the keys matter)."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from mmdet.registry import MODELS
    from sec_mm.engine.dist import adapt_cfg_to_device
    cfg = adapt_cfg_to_device(Config.fromfile(str(DET)), 'none')
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    path = tmp_path_factory.mktemp('det_t') / 'mask-rcnn_secvit-t.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return path


@pytest.mark.e2e
def test_test_py_stops_on_a_checkpoint_of_another_arch(workspace, det_t_checkpoint):
    done = subprocess.run(
        [sys.executable, str(TOOLS / 'test.py'), str(DET), str(det_t_checkpoint), '--work-dir',
         str(workspace / 'wrong_arch'), '--cfg-options', 'model.backbone.arch=s'],
        cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert done.returncode != 0
    assert 'CheckpointMismatchError: The checkpoint does not fit the MaskRCNN model' in done.stdout
    assert re.search(r'Missing keys \(\d+\): backbone\.stages\.0\.blocks\.2\.', done.stdout)
    assert 'coco/bbox_mAP' not in done.stdout


@pytest.mark.e2e
def test_inferencer_stops_on_a_checkpoint_of_another_arch(det_t_checkpoint):
    from mmdet.apis import DetInferencer
    from mmengine.config import Config

    from sec_mm.checkpoint import CheckpointMismatchError
    cfg = Config.fromfile(str(DET))
    cfg.model.backbone.arch = 's'
    with pytest.raises(CheckpointMismatchError,
                       match=r"SECViT \(keys under 'backbone\.'\)(.|\n)*stages\.0\.blocks\.2\."):
        DetInferencer(model=cfg, weights=str(det_t_checkpoint), device='cpu')


def worker_pids(run: Run) -> list:
    """The training processes of a run: torchrun's children (not its dataloader workers)."""
    def cmdline(pid):
        try:
            return Path(f'/proc/{pid}/cmdline').read_bytes().split(b'\0')
        except OSError:
            return []

    pids = []
    for pid in processes_of(run.run_id):
        try:
            parent = int(Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        if b'torch.distributed.run' in cmdline(parent):
            pids.append(pid)
    return pids


@pytest.mark.e2e
@pytest.mark.parametrize('fault', ['killed', 'frozen'])
def test_a_lost_peer_on_another_node_ends_the_run_in_bounded_time(workspace, fault):
    """Two torchrun "nodes" on one host, one training process each. Node 1's process is
    killed (its sockets close) or frozen (nothing more comes from it, as from a crashed or
    unreachable machine); node 0 must end non-zero within the limit, naming rank 1."""
    limit = 10
    port, runs = free_port(), []
    try:
        for node in (0, 1):
            runs.append(Run(['bash', TOOLS / 'dist_train.sh', TINY, 1, '--work-dir',
                             workspace / f'peers_{fault}', '--cfg-options',
                             'train_cfg.max_iters=1000', f'env_cfg.peer_timeout={limit}'],
                            workspace, workspace / f'peers_{fault}_{node}.log', NNODES=2,
                            NODE_RANK=node, MASTER_ADDR='127.0.0.1', PORT=port))
        runs[0].wait_for_output(r'Iter\(train\) \[\s*2/')
        victims = worker_pids(runs[1])
        assert len(victims) == 1, victims
        os.kill(victims[0], signal.SIGKILL if fault == 'killed' else signal.SIGSTOP)
        start = time.monotonic()
        assert wait_for(lambda: runs[0].proc.poll() is not None, timeout=limit + 30), (
            f'node 0 still runs {limit + 30} s after losing rank 1')
        elapsed = time.monotonic() - start
        log = runs[0].output()
        assert runs[0].proc.returncode != 0
        assert elapsed < limit + 30
        if fault == 'frozen':
            assert re.search(r'rank 1 \(node 1, host \S+, pid \d+\) has not been heard from '
                             rf'for \d+ s \(limit env_cfg\.peer_timeout={limit} s\)', log), log
        else:
            assert re.search(r'Peers that stopped: rank 1 \(node 1, ', log), log[-5000:]
    finally:
        for run in runs:
            for pid in processes_of(run.run_id):
                os.kill(pid, signal.SIGCONT)
            run.cleanup()


@pytest.mark.e2e
def test_test_py_names_an_empty_image_file(workspace, det_t_checkpoint, toy_data_root, tmp_path):
    root = tmp_path / 'run'
    shutil.copytree(toy_data_root / 'toy_coco', root / 'data' / 'toy_coco')
    victim = sorted((root / 'data/toy_coco/val2017').iterdir())[1]
    victim.write_bytes(b'')
    done = subprocess.run(
        [sys.executable, str(TOOLS / 'test.py'), str(DET), str(det_t_checkpoint), '--work-dir',
         str(root / 'wd')], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert done.returncode != 0
    assert re.search(r'DataFaultError: The test dataset \(CocoDataset, .*instances_val2017\.json'
                     rf'\), images under \S+: 1 empty \(0-byte\) file\(s\): \S+{victim.name}',
                     done.stdout), done.stdout[-3000:]
    assert '!buf.empty()' not in done.stdout
