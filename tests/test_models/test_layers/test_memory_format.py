"""Conv weights are stored channels-last, so every gradient comes out with its parameter's
strides: what DDP's bucket views have (no "Grad strides do not match bucket view strides"
warning, no strided copy per step)."""
import pytest
import torch

from sec_mm.models import SECSwinTransformer, SECViT, SECVisionTransformer
from sec_mm.models.layers import DepthwiseConv2d

BACKBONES = {
    'SECViT': lambda: SECViT(
        dict(embed_dims=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8],
             layer_scales=[True] * 4), out_indices=(0, 1, 2, 3)),
    'SECSwinTransformer': lambda: SECSwinTransformer(
        dict(embed_dims=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8])),
    'SECVisionTransformer': lambda: SECVisionTransformer(
        dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64), img_size=64),
}


def mismatched_grads(model):
    return [(name, p.stride(), p.grad.stride()) for name, p in model.named_parameters()
            if p.grad is not None and p.grad.stride() != p.stride()]


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_every_gradient_has_its_parameters_strides(name):
    model = BACKBONES[name]().train()
    sum(o.float().sum() for o in model(torch.rand(2, 3, 64, 64))).backward()
    assert mismatched_grads(model) == []


def test_depthwise_5x5_weight_gradient_is_laid_out_like_the_weight():
    conv = DepthwiseConv2d(8, 5)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(2, 8, 12, 12).contiguous(memory_format=torch.channels_last)
    conv(x.requires_grad_()).sum().backward()
    assert conv.weight.grad.stride() == conv.weight.stride()
    reference = torch.nn.functional.conv2d(x, conv.weight.detach().clone().requires_grad_(),
                                           conv.bias, padding=2, groups=8)
    assert torch.allclose(conv(x), reference)
