"""A tiny SECViT classifier (config and random-weight checkpoint) and a small image, shared
by the visualization tool tests."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_CONFIG = REPO_ROOT / 'configs' / 'classification' / 'secvit' / 'secvit-t_8xb128_in1k.py'

# SECViT-T's recipe with a tiny backbone and head, on a non-square 72x88 input (token grids
# 18x22, 9x11, 5x6 and 3x3: clusters of two sizes in stages 1 and 2).
TINY_SECVIT_CONFIG = f"""
_base_ = {str(BASE_CONFIG)!r}
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=[16, 32, 32, 64], depths=[1, 2, 1, 1],
                  num_heads=[2, 2, 2, 4]),
        drop_path_rate=0.),
    head=dict(num_classes=3, in_channels=64, hidden_channels=32),
    train_cfg=None)
test_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(88, 72)),
    dict(type='PackInputs'),
]))
"""


@pytest.fixture(scope='session')
def tiny_secvit_classifier(tmp_path_factory):
    """``(config, checkpoint)`` paths of the tiny SECViT classifier, weights from seed 0."""
    from mmengine.config import Config
    from mmpretrain.apis import get_model
    root = tmp_path_factory.mktemp('tiny_secvit')
    config = root / 'tiny_secvit_cls.py'
    config.write_text(TINY_SECVIT_CONFIG)
    torch.manual_seed(0)
    model = get_model(Config.fromfile(str(config)))
    checkpoint = root / 'tiny_secvit_cls.pth'
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    return config, checkpoint


@pytest.fixture(scope='session')
def shapes_image(tmp_path_factory) -> Path:
    """A 90x110 PNG: a red disc and a green square on a horizontal gradient."""
    image = np.zeros((90, 110, 3), np.uint8)
    image[..., 0] = np.linspace(40, 120, 110, dtype=np.uint8)[None]
    cv2.circle(image, (35, 45), 22, (30, 30, 220), -1)
    cv2.rectangle(image, (70, 20), (100, 60), (40, 200, 60), -1)
    path = tmp_path_factory.mktemp('images') / 'shapes.png'
    cv2.imwrite(str(path), image)
    return path
