import re

import pytest
import torch
from mmdet.registry import MODELS as DET_MODELS
from mmpretrain.models.utils import ShiftWindowMSA
from mmpretrain.registry import MODELS as PRETRAIN_MODELS
from mmseg.registry import MODELS as SEG_MODELS

import sec_mm  # noqa: F401
from sec_mm.models import SECMultiheadAttention, SECSwinTransformer
from sec_mm.checkpoint import CheckpointMismatchError

TINY = dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8])
SWIN_T_BLOCKS = [(stage, block) for stage, depth in enumerate([2, 2, 6, 2])
                 for block in range(depth)]
WINDOW_KEYS = {f'stages.{s}.blocks.{b}.attn.w_msa.relative_position_{name}'
               for s, b in SWIN_T_BLOCKS for name in ('bias_table', 'index')}
LCE_KEYS = {f'stages.{s}.blocks.{b}.attn.lce.{p}' for s, b in SWIN_T_BLOCKS
            for p in ('weight', 'bias')}



pytestmark = pytest.mark.usefixtures('single_thread')


def swin_classifier(backbone_type, arch='t', **backbone):
    return PRETRAIN_MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type=backbone_type, arch=arch, **backbone),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=1000,
                  in_channels=SECSwinTransformer.arch_zoo[arch]['embed_dims'] * 8),
        init_cfg=[dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
                  dict(type='Constant', layer='LayerNorm', val=1., bias=0.)]))


def listed_keys(messages, marker):
    lines = [m for m in messages if marker in m]
    assert len(lines) == 1, lines
    return set(lines[0].split(': ')[-1].split(', '))


def window_to_sec_key(key):
    return key.replace('.attn.w_msa.', '.attn.')


@pytest.mark.parametrize('registry', [
    PRETRAIN_MODELS,
    pytest.param(DET_MODELS, marks=pytest.mark.mmcv_ops),
    pytest.param(SEG_MODELS, marks=pytest.mark.mmcv_ops)])
def test_builds_through_every_registry(registry):
    model = registry.build(dict(type='SECSwinTransformer', arch=TINY, out_indices=(0, 1, 2, 3)))
    assert isinstance(model, SECSwinTransformer)
    assert not any(isinstance(m, ShiftWindowMSA) for m in model.modules())
    clusters = [[block.attn.num_clusters for block in stage.blocks] for stage in model.stages]
    assert clusters == [[32] * 2, [8] * 2, [2] * 2, [-1] * 2]
    assert all(isinstance(block.attn, SECMultiheadAttention) and block.attn.lce is not None
               and block.attn.rope is not None
               for stage in model.stages for block in stage.blocks)


@pytest.mark.parametrize('arch,paper_millions', [('t', 29), ('s', 50), ('b', 88)])
def test_parameter_counts_match_the_paper(arch, paper_millions):
    model = swin_classifier('SECSwinTransformer', arch)
    total = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(total - paper_millions) <= 1.0, total


def test_trains_a_step_at_odd_sizes():
    torch.manual_seed(0)
    model = SECSwinTransformer(arch=TINY, out_indices=(0, 1, 2, 3), drop_path_rate=0.1,
                               with_cp=True)
    model.init_weights()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    outs = model(torch.randn(2, 3, 70, 45))
    # Patch embedding and merging pad odd sizes (ceil), as in mmpretrain's Swin.
    assert [tuple(o.shape) for o in outs] == [(2, 32, 18, 12), (2, 64, 9, 6), (2, 128, 5, 3),
                                              (2, 256, 3, 2)]
    sum(o.square().mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    optimizer.step()
    qkv = 'stages.0.blocks.0.attn.qkv.weight'
    assert not torch.equal(before[qkv], model.state_dict()[qkv])


def test_cluster_settings():
    model = SECSwinTransformer(arch=TINY, cluster_size=98)
    assert {block.attn.cluster_size for s in model.stages for block in s.blocks} == {98}
    model = SECSwinTransformer(arch=TINY, num_clusters=[4, 3, 2, 1], use_rope=False,
                               use_lce=False)
    assert [s.blocks[0].attn.num_clusters for s in model.stages] == [4, 3, 2, 1]
    assert all(b.attn.rope is None and b.attn.lce is None for s in model.stages for b in s.blocks)
    with pytest.raises(ValueError, match='not both'):
        SECSwinTransformer(arch=TINY, num_clusters=2, cluster_size=3)
    with pytest.raises(ValueError, match=r'one per stage \(4\)'):
        SECSwinTransformer(arch=TINY, num_clusters=[2, 2])
    with pytest.raises(ValueError, match=r"no attention windows; remove \['window_size'\]"):
        SECSwinTransformer(arch=TINY, window_size=12)


@pytest.fixture(scope='module')
def mmpretrain_swin_t(tmp_path_factory):
    """An mmpretrain Swin-T classifier with random weights, saved as mmpretrain saves it."""
    stock = swin_classifier('SwinTransformer', 't')
    stock.init_weights()
    state = {k: v.clone() for k, v in stock.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    for value in state.values():
        if value.is_floating_point():
            value.add_(0.02 * torch.randn(value.shape, generator=generator))
    path = tmp_path_factory.mktemp('swin') / 'swin-t_in1k.pth'
    torch.save({'state_dict': state, 'meta': {}}, path)
    return path, state


def test_loads_an_mmpretrain_swin_t_checkpoint(mmpretrain_swin_t, mm_log_messages):
    path, state = mmpretrain_swin_t
    model = SECSwinTransformer(
        arch='t', init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    model.init_weights()
    assert listed_keys(mm_log_messages, 'skipped 24 window-attention keys') == WINDOW_KEYS
    assert listed_keys(mm_log_messages, 'newly initialised') == LCE_KEYS
    ours = model.state_dict()
    stock = {window_to_sec_key(k[len('backbone.'):]): v for k, v in state.items()
             if k.startswith('backbone.')}
    shared = set(ours) & set(stock)
    assert set(ours) - shared == LCE_KEYS
    assert {k for k in stock if k not in shared} == {window_to_sec_key(k) for k in WINDOW_KEYS}
    assert all(torch.equal(ours[k], stock[k]) for k in shared)


def test_whole_classifier_state_dict_loads_through_the_hook(mmpretrain_swin_t,
                                                            mm_log_messages):
    """``load_from`` / ``load_checkpoint`` path: plain ``load_state_dict`` of the classifier."""
    _, state = mmpretrain_swin_t
    model = swin_classifier('SECSwinTransformer', 't')
    result = model.load_state_dict(state, strict=False)
    assert result.unexpected_keys == []
    assert set(result.missing_keys) == {f'backbone.{k}' for k in LCE_KEYS}
    assert len([m for m in mm_log_messages if 'skipped 24 window-attention keys' in m]) == 1
    assert torch.equal(model.head.fc.weight, state['head.fc.weight'])


@pytest.mark.mmcv_ops
def test_loads_an_mmdet_swin_checkpoint(tmp_path, randomize, mm_log_messages):
    """A detector checkpoint whose backbone is mmdet's own SwinTransformer (all 4 out norms)."""
    from mmdet.models.backbones import SwinTransformer as MMDetSwin  # imports mmcv's ops
    stock = randomize(MMDetSwin(out_indices=(0, 1, 2, 3)))
    path = tmp_path / 'mask-rcnn_swin-t.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in stock.state_dict().items()}},
               path)
    model = SECSwinTransformer(
        arch='t', out_indices=(0, 1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    model.init_weights()
    assert listed_keys(mm_log_messages, 'skipped 24 window-attention keys') == WINDOW_KEYS
    assert listed_keys(mm_log_messages, 'newly initialised') == LCE_KEYS
    ours = model.state_dict()
    for key, value in stock.state_dict().items():
        if key not in WINDOW_KEYS:
            assert torch.equal(ours[window_to_sec_key(key)], value), key


def to_original_swin(state):
    """mmpretrain Swin backbone keys -> the original Microsoft release layout (the inverse of
    mmdet's swin_converter)."""
    perm = [0, 2, 1, 3]
    original = {}
    for key, value in state.items():
        if 'downsample.reduction' in key:
            out_channels, in_channels = value.shape
            value = value.reshape(out_channels, in_channels // 4, 4).transpose(1, 2)[:, perm]
            value = value.reshape(out_channels, in_channels)
        elif 'downsample.norm' in key:
            value = value.reshape(-1, 4).transpose(0, 1)[perm].reshape(-1)
        key = re.sub(r'^norm3\.', 'norm.', key)
        key = key.replace('stages.', 'layers.').replace('.attn.w_msa.', '.attn.')
        key = key.replace('ffn.layers.0.0.', 'mlp.fc1.').replace('ffn.layers.1.', 'mlp.fc2.')
        original[key.replace('patch_embed.projection', 'patch_embed.proj')] = value
    return original


@pytest.mark.mmcv_ops  # the conversion is mmdet's
def test_loads_an_original_release_swin_checkpoint(mmpretrain_swin_t, tmp_path):
    path, state = mmpretrain_swin_t
    backbone = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    original = to_original_swin(backbone)
    original.update({'head.weight': state['head.fc.weight'], 'head.bias': state['head.fc.bias']})
    original_path = tmp_path / 'swin_tiny_patch4_window7_224.pth'
    torch.save({'model': original}, original_path)

    from_original = SECSwinTransformer(
        arch='t', init_cfg=dict(type='Pretrained', checkpoint=str(original_path)))
    from_original.init_weights()
    from_mmpretrain = SECSwinTransformer(
        arch='t', init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    from_mmpretrain.init_weights()
    expected = from_mmpretrain.state_dict()
    for key, value in from_original.state_dict().items():
        if '.attn.lce.' not in key:
            assert torch.equal(value, expected[key]), key


def test_checkpoint_that_does_not_fit_raises(mmpretrain_swin_t):
    path, _ = mmpretrain_swin_t
    model = SECSwinTransformer(
        arch='t', use_abs_pos_embed=True,
        init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    with pytest.raises(CheckpointMismatchError, match=r'Missing keys \(1\): absolute_pos_embed'):
        model.init_weights()
    model = SECSwinTransformer(
        arch='t', init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='neck.'))
    with pytest.raises(CheckpointMismatchError, match="prefix 'neck.'"):
        model.init_weights()
