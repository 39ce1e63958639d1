import pytest
import torch
from mmengine.optim import build_optim_wrapper

import sec_mm  # noqa: F401
from sec_mm.models import SECViT
from sec_mm.engine.optim import CPUAmpOptimWrapper

TINY = dict(embed_dims=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8],
            layer_scales=[False, False, True, True])


def test_secvit_trains_under_cpu_bf16_autocast():
    torch.manual_seed(0)
    model = SECViT(arch=TINY, out_indices=(0, 3))
    wrapper = build_optim_wrapper(model, dict(
        type='CPUAmpOptimWrapper', optimizer=dict(type='AdamW', lr=1e-3)))
    assert isinstance(wrapper, CPUAmpOptimWrapper)
    dtypes = []
    model.stages[0].blocks[0].attn.register_forward_hook(
        lambda module, args, out: dtypes.append(out.dtype) and None)
    images = torch.randn(2, 3, 96, 80)
    losses = []
    for _ in range(4):
        with wrapper.optim_context(model):
            feats = model(images)
            loss = sum(f.float().square().mean() for f in feats)
        wrapper.update_params(loss)
        losses.append(loss.item())
        assert all(torch.isfinite(p).all() for p in model.parameters())
    assert dtypes and all(d == torch.bfloat16 for d in dtypes)
    assert all(map(lambda v: torch.isfinite(torch.tensor(v)), losses))
    assert losses[-1] < losses[0]


def test_rejects_unknown_dtype():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match='bfloat16 or float16'):
        CPUAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                           dtype='float64')


def test_only_the_backbone_runs_in_bfloat16():
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(dict(
            type='ImageClassifier', backbone=dict(type='SECViT', arch=TINY),
            head=dict(type='SECViTClsHead', num_classes=3, in_channels=128,
                      hidden_channels=32)))
    wrapper = CPUAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.01))
    seen = {}
    model.backbone.stages[3].blocks[0].attn.register_forward_hook(
        lambda module, args, out: seen.__setitem__('attention', out.dtype))
    model.head.proj.register_forward_hook(
        lambda module, args, out: seen.__setitem__('head_input', args[0].dtype))
    with wrapper.optim_context(model):
        logits = model(torch.randn(2, 3, 64, 64), mode='tensor')
    wrapper.update_params(logits.square().mean())
    assert seen == {'attention': torch.bfloat16, 'head_input': torch.float32}
    assert 'forward' not in vars(model.backbone)  # the patch is gone after the context
