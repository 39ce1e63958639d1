"""Every SEC-Swin / SEC-DeiT config trains one iteration and validates once on the toy sets."""
import math

import pytest
from mmengine.config import Config
from mmengine.runner import Runner
from shrink import shrink_config

import sec_mm  # noqa: F401
from sec_mm.models import SECSwinTransformer, SECVisionTransformer

SWIN = SECSwinTransformer
DEIT = SECVisionTransformer
CONFIGS = [
    ('configs/classification/sec_swin/sec-swin-t_16xb64_in1k.py', SWIN, 'accuracy/top1'),
    ('configs/classification/sec_swin/sec-swin-s_16xb64_in1k.py', SWIN, 'accuracy/top1'),
    ('configs/classification/sec_swin/sec-swin-b_16xb64_in1k.py', SWIN, 'accuracy/top1'),
    ('configs/classification/sec_deit/sec-deit-s_4xb256_in1k.py', DEIT, 'accuracy/top1'),
    ('configs/classification/sec_deit/sec-deit-b_4xb256_in1k.py', DEIT, 'accuracy/top1'),
    ('configs/detection/sec_swin/mask-rcnn_sec-swin-t_fpn_1x_coco.py', SWIN, 'coco/bbox_mAP'),
    ('configs/detection/sec_swin/mask-rcnn_sec-swin-s_fpn_1x_coco.py', SWIN, 'coco/bbox_mAP'),
    ('configs/detection/sec_deit/mask-rcnn_sec-deit-s_fpn_1x_coco.py', DEIT, 'coco/bbox_mAP'),
    ('configs/segmentation/sec_swin/upernet_sec-swin-t_8xb2-160k_ade20k-512x512.py', SWIN,
     'mIoU'),
    ('configs/segmentation/sec_swin/upernet_sec-swin-s_8xb2-160k_ade20k-512x512.py', SWIN,
     'mIoU'),
    ('configs/segmentation/sec_deit/upernet_sec-deit-s_8xb2-160k_ade20k-512x512.py', DEIT,
     'mIoU'),
]


pytestmark = pytest.mark.usefixtures('single_thread')


def test_configs_point_at_the_sec_backbones(repo_root):
    """Full configs (not shrunk): the paper's settings and the pretrained-weight wiring."""
    for path, backbone_type, _ in CONFIGS:
        cfg = Config.fromfile(repo_root / path)
        backbone = cfg.model.backbone
        assert backbone.type == backbone_type.__name__, path
        assert cfg.custom_imports == dict(imports=['sec_mm'], allow_failed_imports=False)
        if backbone_type is SWIN:
            assert 'window_size' not in backbone
            assert backbone.get('num_clusters', (32, 8, 2, -1)) == (32, 8, 2, -1)
        else:
            assert backbone.num_clusters == 4
        if '/classification/' not in path:
            assert backbone.init_cfg.type == 'Pretrained'
            assert backbone.init_cfg.prefix == 'backbone.'


@pytest.mark.e2e
@pytest.mark.parametrize('path,backbone_type,metric', CONFIGS,
                         ids=[c[0].rsplit('/', 1)[-1][:-3] for c in CONFIGS])
def test_config_trains_an_iteration_and_validates(path, backbone_type, metric, repo_root,
                                                  toy_data_root, tmp_path):
    cfg = shrink_config(Config.fromfile(repo_root / path), toy_data_root, tmp_path,
                        image_size=64, batch_size=2)
    runner = Runner.from_cfg(cfg)
    assert type(runner.model.backbone) is backbone_type
    runner.train()
    assert runner.iter == 1
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert math.isfinite(loss)
    scores = {k[len('val/'):]: v.current() for k, v in runner.message_hub.log_scalars.items()
              if k.startswith('val/')}
    assert metric in scores, sorted(scores)
    assert math.isfinite(scores[metric])
