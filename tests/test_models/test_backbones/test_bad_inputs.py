"""Empty batches and bad arguments of the SEC backbones and ops."""
import pytest
import torch

from sec_mm import ops
from sec_mm.models import SECSwinTransformer, SECViT, SECVisionTransformer
from sec_mm.models.layers import DepthwiseConv2d

TINY = dict(embed_dims=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8])
BACKBONES = {
    'SECViT': lambda: SECViT(TINY, out_indices=(0, 1, 2, 3), out_norm_cfg=dict(type='LN2d')),
    'SECSwinTransformer': lambda: SECSwinTransformer(
        dict(embed_dims=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8]),
        out_indices=(0, 1, 2, 3)),
    'SECVisionTransformer': lambda: SECVisionTransformer(
        dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64), img_size=64,
        out_type='featmap'),
}


@pytest.mark.parametrize('name', sorted(BACKBONES))
@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_batch_size_zero_gives_empty_outputs_of_the_right_shapes(name, mode):
    model = BACKBONES[name]()
    getattr(model, mode)()
    image = torch.rand(1, 3, 64, 96)
    one = model(image)
    empty = model(image[:0])
    assert [tuple(o.shape) for o in empty] == [(0, ) + tuple(o.shape[1:]) for o in one]
    # ... and trains: the empty batch back-propagates (zero gradients, nothing aborts).
    model.zero_grad()
    sum(o.sum() for o in empty).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(not g.any() for g in grads)


def test_ops_take_empty_batches():
    q = torch.rand(0, 2, 300, 8, requires_grad=True)  # longer than the explicit-path limit
    index = torch.zeros(0, 2, 300, dtype=torch.long)
    results = {
        'sec_attention': ops.sec_attention(q, q, q, num_clusters=4),
        'sec_attention by size': ops.sec_attention(q, q, q, cluster_size=49),
        'dispatch.attention': ops.dispatch.attention(q, q, q),
        'gather_tokens': ops.gather_tokens(q, index),
        'restore_tokens': ops.restore_tokens(q, index),
        'sec_merge_attention': ops.sec_merge_attention(q, q, q, 16),
    }
    for name, out in results.items():
        assert out.shape[0] == 0 and out.shape[1] == 2, name
        out.sum().backward()
    assert ops.sec_order(q).shape == (0, 2, 300)
    x = torch.rand(0, 4, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    conv = DepthwiseConv2d(4, 5)  # the LCE conv
    conv(x).sum().backward()
    assert conv.bias.grad.shape == (4, ) and not conv.bias.grad.any()


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(num_clusters=2.5), TypeError,
     r'`num_clusters` of SECViT must be an int \(clusters; <= 1 means global attention\) or '
     r'a sequence of one int per stage; got 2\.5 \(float\)'),
    (dict(cluster_size=2.5), TypeError,
     r'`cluster_size` of SECViT must be an int \(tokens per cluster, >= 1\).*got 2\.5'),
    (dict(cluster_size=[98, 98, 0, 98]), ValueError, r'`cluster_size` of SECViT must be >= 1'),
    (dict(num_clusters='4'), TypeError, r"`num_clusters` of SECViT .*got '4' \(str\)"),
    (dict(out_indices='3'), TypeError,
     r"`out_indices` of SECViT must be an int or a sequence of ints in \[0, 4\).*got '3' "
     r'\(str\)'),
    (dict(out_indices=(1, 4)), ValueError, r'got \(1, 4\) \(\[4\] out of range\)'),
    (dict(out_indices=()), ValueError, r'`out_indices` of SECViT is empty'),
    (dict(mlp_ratio=0), ValueError, r'`mlp_ratio` of SECViT must be a positive number; got 0'),
    (dict(mlp_ratio='3'), TypeError, r"`mlp_ratio` of SECViT must be a positive number; got "
     r"'3' \(str\)"),
    (dict(mlp_ratio=0.001), ValueError, r'mlp_ratio 0\.001 leaves stage 0 \(16 channels\) no '
     r'FFN channels'),
    (dict(drop_path_rate=1.5), ValueError, r'`drop_path_rate` of SECViT must be in \[0, 1\)'),
    (dict(frozen_stages=5), ValueError, r'`frozen_stages` of SECViT must be an int in '
     r'\[-1, 4\]'),
    (dict(in_channels=0), ValueError, r'`in_channels` of SECViT must be an int >= 1; got 0'),
    (dict(frozen_stages='1'), TypeError, r"`frozen_stages` of SECViT .*got '1' \(str\)"),
    (dict(arch=dict(TINY, num_heads=[3, 2, 4, 8])), ValueError,
     r'`embed_dims` must be multiples of `num_heads`'),
    (dict(arch=dict(TINY, mlp_ratios=[3, 3, 0, 3])), ValueError, r'arch `mlp_ratios` entry'),
    (dict(arch='q'), ValueError, r"Unknown SECViT arch 'q'"),
    (dict(mlp_ratio=float('inf')), ValueError, r'`mlp_ratio` of SECViT must be a positive '
     r'number; got inf \(a finite one\)'),
    # These turned layer scale off, or RoPE on, without a word.
    (dict(layer_scale_init_value=float('nan')), ValueError,
     r'`layer_scale_init_value` of SECViT must be a positive number; got nan'),
    (dict(layer_scale_init_value=-1e9), ValueError,
     r'`layer_scale_init_value` of SECViT must be a positive number; got -1000000000\.0'),
    (dict(use_rope='no'), TypeError, r"`use_rope` of SECViT must be True or False; got 'no' "
     r'\(str\)'),
    (dict(with_cp=1), TypeError, r'`with_cp` of SECViT must be True or False; got 1 \(int\)'),
])
def test_bad_secvit_arguments_are_named(kwargs, error, message):
    kwargs = dict(dict(arch=TINY), **kwargs)
    with pytest.raises(error, match=message):
        SECViT(**kwargs)


@pytest.mark.parametrize('cls, arch', [(SECSwinTransformer, 'tiny'),
                                       (SECVisionTransformer, 'deit-tiny')])
def test_bad_arguments_of_the_mmpretrain_based_backbones(cls, arch):
    name = cls.__name__
    with pytest.raises(TypeError, match=rf"`out_indices` of {name} must be an int or a "
                       r"sequence of ints; got '3' \(str\)"):
        cls(arch, out_indices='3')
    with pytest.raises(TypeError, match=rf'`num_clusters` of {name} must be an int'):
        cls(arch, num_clusters=2.5)
    with pytest.raises(TypeError, match=rf'`cluster_size` of {name} must be an int'):
        cls(arch, cluster_size=[49.5])


def test_images_of_another_type_are_named():
    model = SECViT(arch=TINY).eval()
    for images in (torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8),
                   torch.rand(1, 3, 64, 64, dtype=torch.float64)):
        with pytest.raises(TypeError, match=rf'SECViT expects torch\.float32 images .*got '
                           rf'{images.dtype}\. Normalise integer images first'):
            model(images)
    # Negative out_indices count from the end, as documented.
    assert SECViT(arch=TINY, out_indices=(-1, )).out_indices == (3, )
