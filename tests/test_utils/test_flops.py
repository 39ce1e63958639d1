"""FLOP counting with SEC attention (sec_mm.utils.flops) against hand-derived counts."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import DefaultScope

import sec_mm  # noqa: F401
from sec_mm.models import SECAttention
from sec_mm.utils.flops import flop_analyzer, model_complexity

REPO_ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures('single_thread')


def attention_macs(num_tokens: int, num_clusters: int, channels: int) -> int:
    """``q k^T`` plus ``attn v`` multiply-adds of SEC attention over all heads: a cluster of
    ``s`` tokens costs ``s * s * d`` for each product and head, ``heads * d = channels``."""
    clusters = 1 if num_clusters <= 1 else min(num_clusters, num_tokens)
    base, extra = divmod(num_tokens, clusters)
    squares = extra * (base + 1)**2 + (clusters - extra) * base**2
    return 2 * squares * channels


def secvit_attention_macs(model, height: int, width: int) -> int:
    """Attention multiply-adds of a SECViT backbone on an ``height x width`` input."""
    total = 0
    for i, stage in enumerate(model.stages):
        stride = 2**(i + 2)
        tokens = -(-height // stride) * -(-width // stride)
        attn = stage.blocks[0].attn
        total += len(stage.blocks) * attention_macs(tokens, attn.num_clusters, attn.embed_dims)
    return total


@pytest.mark.parametrize('size,num_clusters', [(16, 4), (15, 4), (14, 32), (12, -1)],
                         ids=['even-clusters', 'uneven-clusters', 'small-clusters', 'global'])
def test_sec_attention_layer_flops_match_the_analytic_count(size, num_clusters):
    channels, heads = 64, 2
    layer = SECAttention(channels, heads, num_clusters=num_clusters).eval()
    x = torch.randn(1, channels, size, size)
    tokens = size * size

    counted = flop_analyzer(layer, (x, ))
    stock = flop_analyzer(layer, (x, ), count_attention=False)

    attention = attention_macs(tokens, num_clusters, channels)
    convs = tokens * channels * (3 * channels + 25 + channels)  # qkv, LCE 5x5 dw, proj
    similarity = tokens * channels if num_clusters > 1 else 0  # cos(k, mean k) per head
    assert counted.by_operator()['scaled_dot_product_attention'] == attention
    assert counted.total() == attention + convs + similarity
    assert stock.total() == convs + similarity


def _build(cfg):
    """The model of a config (or of the config file at a repository path), random init."""
    if not isinstance(cfg, Config):
        cfg = Config.fromfile(REPO_ROOT / cfg)
    scope = cfg.default_scope
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    with DefaultScope.overwrite_default_scope(scope):
        return revert_sync_batchnorm(registry.build(cfg.model))


DET = 'configs/detection/secvit/'
PROPOSALS = 150  # more than the 100 whose masks count, fewer than 1000 to stay fast


def _slim_detector_cfg(name: str) -> Config:
    """A detector config with thin mask (and cascade box) heads and 150 RPN proposals: the
    same code paths as the full model at a fraction of the head cost."""
    cfg = Config.fromfile(REPO_ROOT / DET / name)
    cfg.model.roi_head.mask_head.conv_out_channels = 16
    cfg.model.test_cfg.rpn.max_per_img = PROPOSALS
    if isinstance(cfg.model.roi_head.bbox_head, list):
        for head in cfg.model.roi_head.bbox_head:
            head.update(conv_out_channels=16, fc_out_channels=32)
    return cfg


@pytest.fixture(scope='module')
def mask_rcnn():
    """(model, complexity) of SECViT-T Mask R-CNN on a 100x150 image."""
    model = _build(_slim_detector_cfg('mask-rcnn_secvit-t_fpn_1x_coco.py'))
    return model, model_complexity(model, 100, 150)


def test_detector_flops_include_the_backbone_attention_on_the_padded_input(mask_rcnn):
    model, result = mask_rcnn
    # The detector's preprocessor pads to a multiple of 32, as in inference.
    assert result.input_shape == (128, 160)
    assert result.attention_flops == secvit_attention_macs(model.backbone, 128, 160)
    assert result.flops == result.flops_without_attention + result.attention_flops
    by_module = result.analyzer.by_module()
    # Every part of the two-stage detector is traced: backbone, neck, RPN, box and mask heads.
    for name in ('model.backbone', 'model.neck', 'model.rpn_head',
                 'model.roi_head.bbox_head', 'model.roi_head.mask_head'):
        assert by_module[name] > 0, name
    # The shared-2fc box head on every proposal: 256*7*7 -> 1024 -> 1024 -> 81 + 320.
    box_flops_per_roi = 256 * 49 * 1024 + 1024 * 1024 + 1024 * (81 + 320)
    assert by_module['model.roi_head.bbox_head'] == PROPOSALS * box_flops_per_roi
    assert result.params == sum(p.numel() for p in model.parameters())


def test_segmentor_flops_at_an_odd_size():
    model = _build('configs/segmentation/secvit/fpn_secvit-t_8xb2-80k_ade20k-512x512.py')
    result = model_complexity(model, 72, 100)
    # Whole-image test mode: no padding; the stem's stride-2 convs round up.
    assert result.input_shape == (72, 100)
    assert result.attention_flops == secvit_attention_macs(model.backbone, 72, 100)
    assert result.analyzer.by_module()['model.decode_head'] > 0


def test_cascade_counts_masks_of_the_first_100_proposals_like_mask_rcnn(mask_rcnn):
    """Published detector FLOPs run mask heads on the first 100 proposals; mmdet 3.x's
    cascade tensor mode would run them on all 150 here."""
    cascade_model = _build(_slim_detector_cfg('cascade-mask-rcnn_secvit-s_fpn_ms-3x_coco.py'))
    cascade = model_complexity(cascade_model, 100, 150).analyzer.by_module()
    mask_flops = mask_rcnn[1].analyzer.by_module()['model.roi_head.mask_head']
    assert mask_flops > 0
    # Every cascade stage: masks of the same first 100 proposals, boxes of all of them.
    assert [cascade[f'model.roi_head.mask_head.{i}'] for i in range(3)] == [mask_flops] * 3
    box_stages = [cascade[f'model.roi_head.bbox_head.{i}'] for i in range(3)]
    assert box_stages[0] > 0 and box_stages == [box_stages[0]] * 3
