"""Grad-CAM of a SECViT classifier: tools/visualization/vis_cam.py and mmpretrain's own
vis_cam.py, each run as a process on a tiny SECViT classifier."""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = REPO_ROOT / 'tools' / 'visualization' / 'vis_cam.py'
TARGET = 'backbone.stages.2.blocks.0'  # the last block of stage 3: a (1, 32, 5, 6) map

pytest.importorskip(
    'pytorch_grad_cam',
    reason='grad-cam is not installed (the `gradcam` extra: pip install -e ".[gradcam]")')


def run_vis_cam(tool, config, checkpoint, image, out):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                      env.get('PYTHONPATH')]))
    return subprocess.run(
        [sys.executable, str(tool), str(image), str(config), str(checkpoint),
         '--target-layers', TARGET, '--save-path', str(out)],
        env=env, capture_output=True, text=True, timeout=600)


def expected_cam(config, checkpoint, image_path):
    """The Grad-CAM overlay written out: ReLU of the target's channels weighted by their mean
    gradient of the top class score, scaled to [0, 1], resized to the input, then drawn with
    grad-cam's own overlay."""
    from mmcv.transforms import Compose
    from mmengine.config import Config
    from mmengine.dataset import default_collate
    from mmpretrain.apis import get_model
    from mmpretrain.registry import TRANSFORMS
    from pytorch_grad_cam.utils.image import show_cam_on_image

    cfg = Config.fromfile(str(config))
    model = get_model(cfg, str(checkpoint))
    data = Compose([TRANSFORMS.build(t) for t in cfg.test_dataloader.dataset.pipeline])(
        dict(img_path=str(image_path)))
    image = data['inputs'].numpy().transpose(1, 2, 0)
    inputs = model.data_preprocessor(default_collate([data]), False)['inputs']
    captured = {}
    block = model.get_submodule(TARGET)
    handle = block.register_forward_hook(lambda m, i, out: captured.update(features=out))
    logits = model(inputs)
    handle.remove()
    features = captured['features']
    grads, = torch.autograd.grad(logits[0, logits[0].argmax()], features)
    cam = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * features).sum(1))[0]
    cam = cam.detach().numpy()
    cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)
    cam = cv2.resize(cam, image.shape[1::-1])
    cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)
    return show_cam_on_image(np.float32(image) / 255, cam, use_rgb=False)


def test_vis_cam_draws_the_grad_cam_of_a_secvit_block(tiny_secvit_classifier, shapes_image,
                                                      tmp_path):
    config, checkpoint = tiny_secvit_classifier
    out = tmp_path / 'cam.png'
    result = run_vis_cam(TOOL, config, checkpoint, shapes_image, out)
    assert result.returncode == 0, result.stderr[-3000:]
    drawn = cv2.imread(str(out))
    assert drawn.shape == (72, 88, 3)  # the test pipeline's image, no reshape needed
    expected = expected_cam(config, checkpoint, shapes_image)
    difference = np.abs(drawn.astype(int) - expected.astype(int))
    # Equal up to rounding (a wrong target layer differs by 50 levels on average).
    assert difference.max() <= 2
    # A map with structure, not a uniform tint.
    assert drawn.reshape(-1, 3).std(0).min() > 10


def test_stock_vis_cam_works_only_below_grad_cam_1_5(tiny_secvit_classifier, shapes_image, tmp_path):
    """mmpretrain's own tool: it passes use_cuda, which grad-cam 1.5 removed (hence the
    wrapper); with an older grad-cam it draws the same map."""
    from importlib.metadata import version

    import mmpretrain
    from mmengine.utils import digit_version
    stock = Path(mmpretrain.__file__).parent / '.mim' / 'tools' / 'visualization' / 'vis_cam.py'
    config, checkpoint = tiny_secvit_classifier
    out = tmp_path / 'cam.png'
    result = run_vis_cam(stock, config, checkpoint, shapes_image, out)
    if digit_version(version('grad-cam')) >= digit_version('1.5.0'):
        assert result.returncode != 0
        assert "unexpected keyword argument 'use_cuda'" in result.stderr
    else:
        assert result.returncode == 0, result.stderr[-3000:]
        expected = expected_cam(config, checkpoint, shapes_image)
        assert np.abs(cv2.imread(str(out)).astype(int) - expected.astype(int)).mean() < 1.5
