"""tools/dist_train.sh, dist_test.sh, train.py, test.py end to end: real torchrun processes,
the real Runner, toy data, a few iterations of the toy SECViT-T Mask R-CNN and UperNet."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sec_mm  # noqa: F401  (torch.load's weights-only default then reads our checkpoints)

from net_helpers import free_port

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / 'tools'
DET = REPO / 'configs/detection/secvit/toy/mask-rcnn_secvit-t_fpn_toy-coco.py'
SEG = REPO / 'configs/segmentation/secvit/toy/upernet_secvit-t_toy-ade-192x192.py'
SIZE = 128  # the toy_data_root images

# Short runs without validation on the small toy images.
COMMON = ['default_hooks.logger.interval=1', 'val_cfg=None', 'val_dataloader=None',
          'val_evaluator=None']
DET_OPTIONS = COMMON + [f'train_dataloader.dataset.pipeline.2.scale=({SIZE},{SIZE})',
                        f'test_dataloader.dataset.pipeline.1.scale=({SIZE},{SIZE})']
SEG_OPTIONS = COMMON + [f'model.data_preprocessor.size=({SIZE},{SIZE})',
                        f'train_dataloader.dataset.pipeline.2.scale=({SIZE},{SIZE})',
                        f'test_dataloader.dataset.pipeline.1.scale=({SIZE},{SIZE})']


@pytest.fixture(scope='module')
def workspace(tmp_path_factory, toy_data_root) -> Path:
    """A folder where the configs' relative ``data/toy_*`` paths find the toy sets."""
    root = tmp_path_factory.mktemp('tools_run')
    (root / 'data').symlink_to(toy_data_root, target_is_directory=True)
    return root


def run(command, cwd, **env) -> str:
    """Run a tool; return its output; fail with the output's tail on a non-zero exit."""
    full_env = dict(os.environ, PYTHON=sys.executable, **{k: str(v) for k, v in env.items()})
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=full_env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert done.returncode == 0, f'{command} failed:\n{done.stdout[-6000:]}'
    return done.stdout


def dist_train(config, workspace, work_dir, options, *extra, env):
    return run(['bash', TOOLS / 'dist_train.sh', config, 2, '--work-dir', work_dir,
                *extra, '--cfg-options', *options], workspace, PORT=free_port(), **env)


def train_iters(log: str):
    return [int(i) for i in re.findall(r'Iter\(train\) \[\s*(\d+)/', log)]


@pytest.fixture(scope='module')
def det_run(workspace, dist_env):
    work_dir = workspace / 'det'
    log = dist_train(DET, workspace, work_dir, DET_OPTIONS + [
        'train_cfg.max_iters=2', 'default_hooks.checkpoint.interval=2'], env=dist_env)
    return work_dir, log


@pytest.fixture(scope='module')
def seg_run(workspace, dist_env):
    work_dir = workspace / 'seg'
    log = dist_train(SEG, workspace, work_dir, SEG_OPTIONS + [
        'train_cfg.max_iters=2', 'default_hooks.checkpoint.interval=2'], env=dist_env)
    return work_dir, log


def assert_two_process_run(log):
    assert 'Distributed training: True' in log
    assert re.search(r'GPU number: 2\b', log)  # mmengine's name for the world size
    # DDP takes every gradient as laid out (no strided copy of channels-last conv grads).
    assert 'Grad strides do not match bucket view strides' not in log


@pytest.mark.e2e
@pytest.mark.parametrize('run_name', ['det_run', 'seg_run'])
def test_dist_train_two_processes_writes_checkpoint(run_name, request):
    work_dir, log = request.getfixturevalue(run_name)
    assert_two_process_run(log)
    assert train_iters(log) == [1, 2]
    checkpoint = work_dir / 'iter_2.pth'
    assert (work_dir / 'last_checkpoint').read_text().strip() == str(checkpoint)
    # Loads with torch's weights-only default: nothing but data in our checkpoints.
    loaded = torch.load(checkpoint, map_location='cpu')
    assert loaded['meta']['iter'] == 2
    assert any(k.startswith('backbone.stages.0.') for k in loaded['state_dict'])
    assert 'SyncBatchNorm' not in ''.join(type(v).__name__ for v in loaded['state_dict'])


@pytest.mark.e2e
def test_resume_continues_at_the_next_iteration(det_run, workspace, dist_env):
    work_dir, first_log = det_run
    log = dist_train(DET, workspace, work_dir, DET_OPTIONS + [
        'train_cfg.max_iters=3', 'default_hooks.checkpoint.interval=1'],
        '--resume', work_dir / 'iter_2.pth', env=dist_env)
    assert 'resumed epoch: 0, iter: 2' in log
    assert train_iters(log) == [3]
    loaded = torch.load(work_dir / 'iter_3.pth', map_location='cpu')
    assert loaded['meta']['iter'] == 3
    # The schedule went on too: the warm-up lr of iteration 3, not of iteration 1.
    lrs = [float(x) for x in re.findall(r'Iter\(train\).*? lr: (\S+)', first_log + log)]
    assert lrs[2] > lrs[1] > lrs[0]
    assert lrs[2] - lrs[1] == pytest.approx(lrs[1] - lrs[0], rel=1e-3)


@pytest.mark.e2e
def test_dist_test_prints_coco_metrics(det_run, workspace, dist_env):
    work_dir, _ = det_run
    # A barely trained detector scores below the default threshold; keep every box.
    log = run(['bash', TOOLS / 'dist_test.sh', DET, work_dir / 'iter_2.pth', 2, '--work-dir',
               workspace / 'det_test', '--out', workspace / 'det_test' / 'results.pkl',
               '--show-dir', 'painted', '--cfg-options', *DET_OPTIONS[4:],
               'model.test_cfg.rcnn.score_thr=0.0'],
              workspace, PORT=free_port(), **dist_env)
    assert_two_process_run(log)
    for metric in ('coco/bbox_mAP', 'coco/segm_mAP', 'coco/bbox_mAP_50'):
        assert re.search(rf'{metric}: \d\.\d+', log), metric
    assert (workspace / 'det_test' / 'results.pkl').stat().st_size > 0
    # --show-dir as in mmdet: under work_dir/<timestamp>/; mmengine visualizers draw on rank 0
    # only, so the pictures are rank 0's share of the val images.
    painted = {p.name for p in (workspace / 'det_test').glob('*/painted/*.jpg')}
    val_images = {p.name for p in (workspace / 'data/toy_coco/val2017').glob('*.jpg')}
    assert painted and painted <= val_images


@pytest.mark.e2e
def test_test_py_evaluates_segmentation(seg_run, workspace):
    work_dir, _ = seg_run
    out_dir = workspace / 'seg_pred'
    log = run([sys.executable, TOOLS / 'test.py', SEG, work_dir / 'iter_2.pth', '--work-dir',
               workspace / 'seg_test', '--out', out_dir, '--cfg-options', *SEG_OPTIONS[4:]],
              workspace)
    match = re.search(r'mIoU: (\d+\.\d+)', log)
    assert match and 0 <= float(match.group(1)) <= 100
    for name in ('background', 'circle', 'square', 'triangle'):
        assert re.search(rf'\|\s+{name}\s+\|', log), name  # the per-class table
    assert len(list(out_dir.glob('*.png'))) == len(list(
        (workspace / 'data/toy_ade/images/validation').glob('*.jpg')))


@pytest.mark.e2e
def test_whole_image_inference_on_sizes_not_multiple_of_32(seg_run):
    from mmengine.config import Config
    from mmseg.apis import inference_model, init_model

    from sec_mm.engine.dist import adapt_cfg_to_device
    work_dir, _ = seg_run
    cfg = adapt_cfg_to_device(Config.fromfile(str(SEG)), 'none')
    assert cfg.model.test_cfg.mode == 'whole'
    model = init_model(cfg, str(work_dir / 'iter_2.pth'), device='cpu')
    image = np.random.default_rng(0).integers(0, 255, (97, 150, 3), dtype=np.uint8)
    result = inference_model(model, image)
    assert result.pred_sem_seg.data.shape == (1, 97, 150)
    assert result.seg_logits.data.shape == (4, 97, 150)
    assert set(result.pred_sem_seg.data.unique().tolist()) <= {0, 1, 2, 3}


@pytest.mark.e2e
def test_two_nodes_on_one_machine(workspace, dist_env):
    """Two torchrun invocations (NNODES=2, NODE_RANK 0/1), one process each, one job."""
    port = free_port()
    work_dir = workspace / 'two_nodes'
    command = ['bash', str(TOOLS / 'dist_train.sh'), str(SEG), '1', '--work-dir',
               str(work_dir), '--cfg-options', *SEG_OPTIONS, 'train_cfg.max_iters=1',
               'default_hooks.checkpoint.interval=1']
    procs = []
    for node_rank in (0, 1):
        env = dict(os.environ, PYTHON=sys.executable, NNODES='2', NODE_RANK=str(node_rank),
                   MASTER_ADDR='127.0.0.1', PORT=str(port), OMP_NUM_THREADS='1', **dist_env)
        procs.append(subprocess.Popen(command, cwd=workspace, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=600)[0])
        finally:
            if proc.poll() is None:
                proc.kill()
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-6000:]
    assert_two_process_run(outputs[0])
    assert train_iters(outputs[0]) == [1]
    assert torch.load(work_dir / 'iter_1.pth', map_location='cpu')['meta']['iter'] == 1
