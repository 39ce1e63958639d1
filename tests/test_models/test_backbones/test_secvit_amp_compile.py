"""SECViT under mixed precision (mmengine's CPU bf16 autocast) and under torch.compile."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper
from mmengine.runner.amp import autocast
from mmpretrain.registry import MODELS

import sec_mm  # noqa: F401
from sec_mm.models import SECViT

TINY = dict(embed_dims=[16, 32, 64, 128], depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
            layer_scales=[False, False, True, True])


def test_trains_under_cpu_bfloat16_autocast():
    """A few optimizer steps with the autocast AmpOptimWrapper uses (bf16 on CPU)."""
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='SECViT', arch=TINY, drop_path_rate=0.1, out_indices=(0, 3)),
        head=dict(type='SECViTClsHead', num_classes=10, in_channels=128)))
    model.init_weights()
    model.train()
    wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-3))
    images, labels = torch.randn(4, 3, 96, 96), torch.tensor([1, 3, 5, 7])
    losses = []
    for _ in range(3):
        with autocast(device_type='cpu', dtype=torch.bfloat16):
            feats = model.extract_feat(images)
            logits = model.head(feats)
            loss = F.cross_entropy(logits, labels)
        assert feats[0].dtype == torch.bfloat16  # autocast reached the backbone
        assert torch.isfinite(loss)
        wrapper.backward(loss)
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert all(g.dtype == torch.float32 for g in grads)
        wrapper.step()
        wrapper.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.e2e
def test_torch_compile_equals_eager():
    """The inductor-compiled backbone gives the eager outputs (compiling takes minutes on
    CPU, hence e2e and forward only; the custom autograd functions' backward is covered by
    the gradient tests of the op and the layers)."""
    torch.manual_seed(0)
    model = SECViT(arch=TINY, drop_path_rate=0., out_indices=(0, 1, 2, 3))
    model.init_weights()
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        outs = torch.compile(model)(x)
    for ours, ref in zip(outs, expected):
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
