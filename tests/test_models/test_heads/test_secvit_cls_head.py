import pytest
import torch
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import sec_mm  # noqa: F401


def build_head():
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(dict(type='SECViTClsHead', num_classes=5, in_channels=32,
                                 hidden_channels=16))


def test_forward_and_loss():
    head = build_head()
    feats = (torch.randn(3, 32, 4, 5), )
    assert head(feats).shape == (3, 5)
    samples = [DataSample().set_gt_label(i) for i in (0, 1, 4)]
    loss = head.loss(feats, samples)['loss']
    assert loss.ndim == 0 and loss > 0
    preds = head.predict(feats)
    assert preds[0].pred_score.shape == (5, )


def test_pre_logits_is_projection_bn_swish_pool():
    head = build_head().eval()
    x = torch.randn(2, 32, 3, 3)
    expected = torch.nn.functional.silu(head.norm(head.proj(x))).mean((2, 3))
    torch.testing.assert_close(head.pre_logits((x, )), expected)


def test_wrong_channels():
    with pytest.raises(ValueError, match=r'\(B, 32, H, W\)'):
        build_head()((torch.randn(2, 16, 4, 4), ))
