"""The non-finite guard end to end: one all-NaN training image in a 2-process run
(tools/dist_train.sh) stops both ranks at the iteration that meets it, before anything of that
step is saved; tools/test.py refuses a checkpoint with non-finite weights, naming them."""
import re
import shutil
import sys

import cv2
import numpy as np
import pytest
import torch

from training_helpers import TINY, TOOLS, run, train_command

NAN_IMAGE = 'train/circle/train_000001.JPEG'
# Images read as they are (the NaN one as float32), on the copy of the toy set with it.
NAN_CONFIG = f"""
_base_ = {str(TINY)!r}
train_dataloader = dict(dataset=dict(data_root='nan_data', pipeline=[
    dict(type='LoadImageFromFile', color_type='unchanged', to_float32=True),
    dict(type='Resize', scale=(32, 32)),
    dict(type='PackInputs'),
]))
"""


@pytest.fixture(autouse=True)
def host_env(dist_env, monkeypatch):
    """The processes these tests start see the host's two-process settings (see dist_env)."""
    for key, value in dist_env.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope='module')
def workspace(tmp_path_factory, toy_data_root):
    root = tmp_path_factory.mktemp('nonfinite')
    (root / 'data').symlink_to(toy_data_root, target_is_directory=True)
    # The toy set with one image replaced by an all-NaN float32 TIFF (uncompressed: keeps
    # the NaN), under its JPEG name: what a broken conversion can leave.
    shutil.copytree(toy_data_root / 'toy_imagenet', root / 'nan_data')
    ok, data = cv2.imencode('.tiff', np.full((128, 128, 3), np.nan, np.float32),
                            [cv2.IMWRITE_TIFF_COMPRESSION, 1])
    assert ok
    (root / 'nan_data' / NAN_IMAGE).write_bytes(data.tobytes())
    (root / 'nan.py').write_text(NAN_CONFIG)
    return root


@pytest.mark.e2e
def test_a_nan_image_stops_every_rank_before_its_step_is_saved(workspace):
    work_dir = workspace / 'nan_run'
    done = run(train_command(workspace / 'nan.py', work_dir, '--cfg-options',
                             'train_cfg.max_iters=6', gpus=2),
               workspace, workspace / 'nan_run.log')
    assert done.returncode != 0
    found = re.search(r'Iteration (\d+): (.*)', done.stdout)
    assert found, done.stdout[-5000:]
    stopped_at, message = int(found.group(1)), found.group(2)
    # The rank that read the image names it; both ranks stop at that iteration.
    assert re.search(r'rank \d: non-finite loss term\(s\) loss \(loss=nan\)\. Batch: .*'
                     r'Images with non-finite pixels: ' + re.escape(f'nan_data/{NAN_IMAGE}'),
                     message), message
    assert 'Training stopped before anything of this step was saved' in message
    assert re.search(r'exitcode\s*:\s*1', done.stdout)
    assert sorted(p.name for p in work_dir.glob('*.pth')) == \
        [f'iter_{i}.pth' for i in range(1, stopped_at)]


@pytest.fixture(scope='module')
def nan_checkpoint(tmp_path_factory):
    """A checkpoint of the tiny classifier with NaN in two tensors."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    import sec_mm  # noqa: F401 (registers SECViT)
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(Config.fromfile(str(TINY)).model)
    state = model.state_dict()
    state['backbone.patch_embed.0.conv.weight'][0, 0, 0] = float('nan')  # a kernel row: 3 values
    state['head.fc.bias'][0] = float('inf')
    path = tmp_path_factory.mktemp('nan_ckpt') / 'nan.pth'
    torch.save(dict(state_dict=state, meta=dict()), path)
    return path


@pytest.mark.e2e
def test_test_py_refuses_non_finite_weights_naming_them(workspace, nan_checkpoint):
    done = run([sys.executable, str(TOOLS / 'test.py'), str(TINY), str(nan_checkpoint),
                '--work-dir', str(workspace / 'test_nan')], workspace,
               workspace / 'test_nan.log')
    assert done.returncode == 1
    assert re.search(rf'NonFiniteError: {re.escape(str(nan_checkpoint))} holds non-finite '
                     r'weights: backbone\.patch_embed\.0\.conv\.weight \(3 of \d+ '
                     r'values\), head\.fc\.bias \(1 of 3 values\) \(2 of \d+ tensors\)',
                     done.stdout), done.stdout[-5000:]
    assert 'accuracy/top1' not in done.stdout
