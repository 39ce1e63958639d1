"""One training iteration of the toy Mask R-CNN and UperNet on CUDA with --amp, through
tools/train.py (needs mmcv's compiled CUDA ops)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {
    'det': REPO / 'configs/detection/secvit/toy/mask-rcnn_secvit-t_fpn_toy-coco.py',
    'seg': REPO / 'configs/segmentation/secvit/toy/upernet_secvit-t_toy-ade-192x192.py',
}

pytestmark = [
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason='no CUDA GPU visible (torch.cuda.is_available() is False)'),
    pytest.mark.mmcv_ops, pytest.mark.e2e,
]


@pytest.mark.parametrize('amp', ['fp16', 'bf16'])
@pytest.mark.parametrize('task', sorted(CONFIGS))
def test_one_iteration_on_cuda(task, amp, toy_data_root, tmp_path):
    (tmp_path / 'data').symlink_to(toy_data_root, target_is_directory=True)
    work_dir = tmp_path / 'work'
    command = [sys.executable, str(REPO / 'tools/train.py'), str(CONFIGS[task]), '--amp', amp,
               '--work-dir', str(work_dir), '--cfg-options', 'train_cfg.max_iters=1',
               'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1',
               'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None']
    done = subprocess.run(command, cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stdout[-6000:]
    dtype = {'fp16': 'float16', 'bf16': 'bfloat16'}[amp]
    assert 'AmpOptimWrapper' in done.stdout and f"dtype='{dtype}'" in done.stdout
    checkpoint = torch.load(work_dir / 'iter_1.pth', map_location='cpu', weights_only=False)
    assert checkpoint['meta']['iter'] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint['state_dict'].values()
               if v.is_floating_point())
