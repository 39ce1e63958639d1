"""The SECViT configs: paper parameter counts, backbone wiring, and one real Runner training
iteration plus a validation pass of every config on the toy sets (the recipes:
test_recipes.py)."""
import copy
import importlib
import math
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import DefaultScope
from shrink import build_runner, shrink_config, toy_classes

import sec_mm  # noqa: F401
from sec_mm.models import SECViT

REPO_ROOT = Path(__file__).resolve().parents[2]
DET = 'configs/detection/secvit/'
SEG = 'configs/segmentation/secvit/'
CLS = 'configs/classification/secvit/'

# Parameters the papers report (millions; rounded there), and exact ones for the classifiers
# (SPEC: the released models).
PAPER_PARAMS_M = {
    **{f'{DET}mask-rcnn_secvit-{a}_fpn_1x_coco.py': p
       for a, p in zip('tsbl', (34, 45, 73, 115))},
    **{f'{DET}mask-rcnn_secvit-{a}_fpn_ms-3x_coco.py': p for a, p in zip('sb', (45, 73))},
    **{f'{DET}cascade-mask-rcnn_secvit-{a}_fpn_ms-3x_coco.py': p
       for a, p in zip('sb', (83, 111))},
    **{f'{DET}retinanet_secvit-{a}_fpn_1x_coco.py': p
       for a, p in zip('tsbl', (24, 35, 63, 105))},
    **{f'{SEG}fpn_secvit-{a}_8xb2-80k_ade20k-512x512.py': p
       for a, p in zip('tsbl', (18, 29, 57, 99))},
    **{f'{SEG}upernet_secvit-{a}_8xb2-160k_ade20k-512x512.py': p
       for a, p in zip('sbl', (56, 84, 130))},
}
RELEASED_CLASSIFIER_PARAMS = {
    f'{CLS}secvit-{a}_8xb128_in1k.py': p
    for a, p in zip('tsbl', (14_981_800, 26_776_104, 54_682_776, 96_495_096))
}
DENSE_CONFIGS = list(PAPER_PARAMS_M)
ALL_CONFIGS = DENSE_CONFIGS + list(RELEASED_CLASSIFIER_PARAMS)
STAGE_CHANNELS = {'t': [64, 128, 256, 512], 's': [64, 128, 256, 512],
                  'b': [80, 160, 320, 512], 'l': [112, 224, 448, 640]}


def _id(path: str) -> str:
    return Path(path).stem


def _arch(path: str) -> str:
    return Path(path).stem.split('secvit-')[1][0]


@lru_cache(maxsize=None)
def _load(path: str) -> Config:
    """Parsed once per session; callers that change it take a deep copy."""
    return Config.fromfile(REPO_ROOT / path)


def _build_on_meta(cfg: Config) -> torch.nn.Module:
    """The model of a config with parameters on the meta device: real construction through
    the registries, no memory for weights and no random init."""
    scope = cfg.default_scope
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope), torch.device('meta'):
        return registry.build(copy.deepcopy(cfg.model))


pytestmark = pytest.mark.usefixtures('single_thread')


def test_parameter_counts_match_the_papers():
    rows, failures = [], []
    for path in ALL_CONFIGS:
        model = _build_on_meta(_load(path))
        count = sum(p.numel() for p in model.parameters())
        if path in RELEASED_CLASSIFIER_PARAMS:
            expected = RELEASED_CLASSIFIER_PARAMS[path]
            ok = count == expected
        else:
            expected = PAPER_PARAMS_M[path] * 1e6
            ok = abs(count - expected) <= 0.03 * expected
        rows.append(f'{_id(path):48s} {count / 1e6:8.2f}M {expected / 1e6:8.2f}M '
                    f'{100 * (count - expected) / expected:+6.1f}%  {"ok" if ok else "FAIL"}')
        if not ok:
            failures.append(rows[-1])
    print('\n'.join([f'{"config":48s} {"ours":>9s} {"paper":>9s} {"diff":>7s}'] + rows))
    assert not failures, 'parameter counts off by more than 3%:\n' + '\n'.join(failures)


@pytest.mark.parametrize('path', DENSE_CONFIGS, ids=_id)
def test_dense_config_wires_the_backbone(path):
    """Backbone, weights and channel wiring; the training recipes are in test_recipes.py."""
    cfg = _load(path)
    arch = _arch(path)
    assert cfg.custom_imports == dict(imports=['sec_mm'], allow_failed_imports=False)
    backbone = cfg.model.backbone
    assert backbone.type == 'SECViT' and backbone.arch == arch
    assert tuple(backbone.num_clusters) == (32, 8, 2, -1)
    assert backbone.init_cfg == dict(type='Pretrained', prefix='backbone.',
                                     checkpoint=f'checkpoints/secvit-{arch}_in1k_mm.pth')
    channels = STAGE_CHANNELS[arch]
    in_channels = [channels[i] for i in backbone.out_indices]
    neck_or_head = cfg.model.get('neck') or cfg.model.decode_head
    assert list(neck_or_head.in_channels) == in_channels
    name = Path(path).name
    if name.startswith('cascade'):
        heads = cfg.model.roi_head.bbox_head
        assert [h.num_shared_convs for h in heads] == [4, 4, 4]
        assert [h.loss_bbox.type for h in heads] == ['GIoULoss'] * 3
    if name.startswith('upernet'):
        assert cfg.model.auxiliary_head.in_channels == channels[2]
    if name.startswith(('upernet', 'fpn')):
        assert cfg.model.data_preprocessor.size == (512, 512)
        assert cfg.model.decode_head.num_classes == 150


class _Probe(Hook):
    """Records what a short run did: losses, validation outputs and metrics."""

    def __init__(self) -> None:
        self.train_losses, self.val_outputs, self.val_metrics = [], [], None

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.train_losses.append({k: float(v) for k, v in outputs.items()})

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.val_outputs.extend(outputs)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.val_metrics = metrics


def _check_prediction(sample, scope: str, with_mask: bool, num_classes: int) -> bool:
    """Checks one validation output; returns whether it holds any prediction."""
    if scope == 'mmdet':
        pred = sample.pred_instances
        assert pred.bboxes.shape == (len(pred), 4)
        assert ((pred.labels >= 0) & (pred.labels < num_classes)).all()
        if with_mask:
            assert pred.masks.shape[1:] == tuple(sample.ori_shape)
        return len(pred) > 0
    if scope == 'mmseg':
        # Whole-image inference, resized back to the original image.
        assert sample.pred_sem_seg.data.shape == (1, *sample.ori_shape)
        assert sample.pred_sem_seg.data.max() < num_classes
        return True
    assert sample.pred_score.shape == (num_classes, )
    return True


@pytest.mark.e2e
@pytest.mark.parametrize('path', ALL_CONFIGS, ids=_id)
def test_config_trains_an_iteration_and_validates(path, toy_data_root, tmp_path):
    cfg = shrink_config(_load(path), toy_data_root, tmp_path, image_size=64, batch_size=2,
                        iters=1, num_val_images=2)
    cfg.log_level = 'WARNING'
    runner = build_runner(cfg)
    assert isinstance(runner.model.backbone, SECViT)
    probe = _Probe()
    runner.register_hook(probe, priority='LOWEST')
    runner.train()

    assert runner.iter == 1 and len(probe.train_losses) == 1
    losses = probe.train_losses[0]
    assert losses['loss'] > 0 and all(math.isfinite(v) for v in losses.values()), losses

    scope = cfg.default_scope
    classes, seg_classes = toy_classes()
    num_classes = len(seg_classes) if scope == 'mmseg' else len(classes)
    assert len(probe.val_outputs) == 2
    predicted = [
        _check_prediction(s, scope, 'mask' in Path(path).name, num_classes)
        for s in probe.val_outputs
    ]
    metric = {'mmdet': 'coco/bbox_mAP', 'mmseg': 'mIoU', 'mmpretrain': 'accuracy/top1'}[scope]
    # COCO evaluation has nothing to score when no image has a detection (e.g. RetinaNet's
    # focal-loss prior keeps every score under the threshold after one iteration).
    if any(predicted):
        assert metric in probe.val_metrics, probe.val_metrics
        assert -1 <= probe.val_metrics[metric] <= 100
