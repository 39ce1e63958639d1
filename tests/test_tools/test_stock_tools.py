"""Checkpoints that our tools/train.py writes load in the codebases' own tools and inferencers.

Nothing but ``import sec_mm`` (a config's ``custom_imports``) prepares them: the stock
``tools/test.py`` shipped inside the installed mmdet, mmseg and mmpretrain runs in a
subprocess with no ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``, so ``torch.load`` keeps its
weights-only default; the same checkpoints feed ``DetInferencer``, ``MMSegInferencer`` and
``ImageClassificationInferencer``. One checkpoint per codebase, one training iteration each.
"""
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sec_mm  # noqa: F401  (what custom_imports does; nothing else is set up here)
from sec_mm.utils import CODEBASES

REPO = Path(__file__).resolve().parents[2]
SIZE = 128  # the toy_data_root images
CONFIGS = {
    'mmdet': REPO / 'configs/detection/secvit/toy/mask-rcnn_secvit-t_fpn_toy-coco.py',
    'mmseg': REPO / 'configs/segmentation/secvit/toy/upernet_secvit-t_toy-ade-192x192.py',
    'mmpretrain': REPO / 'configs/classification/secvit/toy/secvit-t_toy-imagenet.py',
}
# The toy configs at the toy images' size; the classifier's pipelines already use it.
TEST_OPTIONS = {
    'mmdet': [f'test_dataloader.dataset.pipeline.1.scale=({SIZE},{SIZE})',
              # a barely trained detector scores below the default threshold
              'model.test_cfg.rcnn.score_thr=0.0'],
    'mmseg': [f'model.data_preprocessor.size=({SIZE},{SIZE})',
              f'test_dataloader.dataset.pipeline.1.scale=({SIZE},{SIZE})'],
    'mmpretrain': ['test_dataloader.batch_size=2'],
}
TRAIN_OPTIONS = {
    'mmdet': [f'train_dataloader.dataset.pipeline.2.scale=({SIZE},{SIZE})'],
    'mmseg': [f'train_dataloader.dataset.pipeline.2.scale=({SIZE},{SIZE})'],
    'mmpretrain': ['train_dataloader.batch_size=2'],
}
# What each stock test.py prints when it evaluates.
METRICS = {
    'mmdet': [r'coco/bbox_mAP: \d\.\d+', r'coco/segm_mAP: \d\.\d+'],
    'mmseg': [r'mIoU: \d+\.\d+', r'\|\s+circle\s+\|'],
    'mmpretrain': [r'accuracy/top1: \d+\.\d+'],
}


def clean_env() -> dict:
    """This process's environment without the switch that turns weights-only loading off,
    with this checkout first on the path (custom_imports then imports this sec_mm)."""
    env = dict(os.environ)
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')]))
    return env


def run(command, cwd) -> str:
    """Run a command; return its output; fail with the output's tail on a non-zero exit."""
    env = clean_env()
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in env
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    assert done.returncode == 0, f'{command} exited with {done.returncode}:\n' \
                                 f'{done.stdout[-6000:]}'
    return done.stdout


def stock_test_py(codebase: str) -> Path:
    """``tools/test.py`` as the installed package ships it (what ``mim test`` runs)."""
    package = Path(importlib.import_module(codebase).__file__).parent
    path = package / '.mim' / 'tools' / 'test.py'
    assert path.is_file(), f'{codebase} installed without its tools: {path}'
    return path


@pytest.fixture(scope='module')
def workspace(tmp_path_factory, toy_data_root) -> Path:
    """A folder where the toy configs' relative ``data/toy_*`` paths find the toy sets."""
    root = tmp_path_factory.mktemp('stock_tools')
    (root / 'data').symlink_to(toy_data_root, target_is_directory=True)
    return root


@pytest.fixture(scope='module')
def checkpoints(workspace):
    """Per codebase, the checkpoint our tools/train.py writes after one iteration."""
    trained = {}

    def get(codebase: str) -> Path:
        if codebase not in trained:
            work_dir = workspace / f'train_{codebase}'
            run([sys.executable, REPO / 'tools' / 'train.py', CONFIGS[codebase],
                 '--work-dir', work_dir, '--cfg-options', 'train_cfg.max_iters=1',
                 'default_hooks.checkpoint.interval=1',
                 'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None',
                 *TRAIN_OPTIONS[codebase]], workspace)
            trained[codebase] = work_dir / 'iter_1.pth'
            assert trained[codebase].is_file()
        return trained[codebase]

    return get


@pytest.fixture(scope='module')
def toy_image(toy_data_root) -> str:
    return str(sorted((toy_data_root / 'toy_coco' / 'val2017').glob('*.jpg'))[0])


@pytest.mark.e2e
@pytest.mark.parametrize('codebase', CODEBASES)
def test_stock_test_py_evaluates_our_checkpoint(codebase, checkpoints, workspace):
    log = run([sys.executable, stock_test_py(codebase), CONFIGS[codebase],
               checkpoints(codebase), '--work-dir', workspace / f'test_{codebase}',
               '--cfg-options', *TEST_OPTIONS[codebase]], workspace)
    assert 'Load checkpoint from' in log
    for pattern in METRICS[codebase]:
        assert re.search(pattern, log), f'{pattern!r} not in the output:\n{log[-3000:]}'


@pytest.mark.e2e
def test_det_inferencer(checkpoints, toy_image):
    from mmdet.apis import DetInferencer
    inferencer = DetInferencer(str(CONFIGS['mmdet']), weights=str(checkpoints('mmdet')),
                               device='cpu', show_progress=False)
    # The trained checkpoint's classes, not COCO's 80.
    assert inferencer.model.dataset_meta['classes'] == ('circle', 'square', 'triangle')
    prediction = inferencer(toy_image, no_save_vis=True)['predictions'][0]
    num = len(prediction['scores'])
    assert 0 < num <= 100  # the test config keeps at most 100 detections
    assert np.asarray(prediction['bboxes']).shape == (num, 4)
    assert len(prediction['labels']) == len(prediction['masks']) == num
    assert set(prediction['labels']) <= {0, 1, 2}


@pytest.mark.e2e
def test_mmseg_inferencer(checkpoints, toy_image):
    from mmseg.apis import MMSegInferencer
    inferencer = MMSegInferencer(str(CONFIGS['mmseg']), weights=str(checkpoints('mmseg')),
                                 device='cpu')
    inferencer.show_progress = False
    prediction = inferencer(toy_image)['predictions']
    assert prediction.shape == (SIZE, SIZE)  # the input image's size
    assert set(np.unique(prediction).tolist()) <= {0, 1, 2, 3}


@pytest.mark.e2e
def test_image_classification_inferencer(checkpoints, toy_image):
    from mmengine.registry import init_default_scope
    from mmpretrain.apis import ImageClassificationInferencer

    # mmpretrain's inferencer builds its pipeline in the current default scope, which the
    # mmdet and mmseg inferencers above leave at theirs.
    init_default_scope('mmpretrain')
    inferencer = ImageClassificationInferencer(
        str(CONFIGS['mmpretrain']), pretrained=str(checkpoints('mmpretrain')), device='cpu')
    result = inferencer(toy_image)[0]
    assert result['pred_scores'].shape == (3, )
    assert result['pred_scores'].sum() == pytest.approx(1, abs=1e-5)
    assert result['pred_class'] in ('circle', 'square', 'triangle')
