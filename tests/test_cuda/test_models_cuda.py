"""SEC backbones on CUDA: mixed-precision training steps, fused attention kernels."""
import pytest
import torch

import sec_mm  # noqa: F401  (registers the models)

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason='no CUDA GPU visible (torch.cuda.is_available() is False)')

BACKBONES = {
    'secvit-t': dict(type='SECViT', arch='t', out_indices=(0, 1, 2, 3), drop_path_rate=0.1),
    'sec-swin-t': dict(type='SECSwinTransformer', arch='tiny', out_indices=(0, 1, 2, 3),
                       drop_path_rate=0.2),
    'sec-deit-s': dict(type='SECVisionTransformer', arch='deit-small', out_type='featmap',
                       drop_path_rate=0.1),
}
# mmengine's Swin/ViT take 224 inputs; SECViT any size (one not divisible by 32 here).
SIZES = {'secvit-t': (2, 3, 224, 200), 'sec-swin-t': (2, 3, 224, 224),
         'sec-deit-s': (2, 3, 224, 224)}


def _build(name):
    from mmpretrain.registry import MODELS
    model = MODELS.build(BACKBONES[name])
    model.init_weights()
    return model.cuda().train()


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=['fp16', 'bf16'])
@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_train_step_under_autocast(name, dtype):
    torch.manual_seed(0)
    model = _build(name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(*SIZES[name], device='cuda')
    for _ in range(2):
        with torch.autocast('cuda', dtype=dtype):
            outs = model(images)
            loss = sum(out.float().square().mean() for out in outs)
        assert torch.isfinite(loss), name
        optimizer.zero_grad()
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        optimizer.step()


@pytest.mark.parametrize('name', ['secvit-t', 'sec-deit-s'])
def test_attention_runs_in_fused_kernels(name):
    """No SDPA call falls back to the unfused math kernel (it would materialise the scores)."""
    model = _build(name)
    images = torch.randn(*SIZES[name], device='cuda')
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as profile:
        with torch.autocast('cuda', dtype=torch.float16):
            outs = model(images)
        sum(out.float().sum() for out in outs).backward()
        torch.cuda.synchronize()
    names = {event.name for event in profile.events()}
    fused = {n for n in names if n.startswith('aten::_scaled_dot_product_') and
             ('flash' in n or 'efficient' in n or 'cudnn' in n)}
    assert fused, sorted(n for n in names if 'attention' in n)
    assert 'aten::_scaled_dot_product_attention_math' not in names
