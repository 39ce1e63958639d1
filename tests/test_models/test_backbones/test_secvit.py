import re

import pytest
import torch
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS as PRETRAIN_MODELS

import sec_mm  # noqa: F401
from sec_mm.converters import convert_secvit_state_dict
from sec_mm.models import SECViT
from sec_mm.checkpoint import CheckpointMismatchError

# SPEC table: trainable parameters of the released classifiers (ImageNet-1k head).
RELEASED_PARAMS = {'t': 14_981_800, 's': 26_776_104, 'b': 54_682_776, 'l': 96_495_096}


def build_classifier(arch, **backbone):
    channels = arch['embed_dims'][-1] if isinstance(arch, dict) else \
        SECViT.arch_zoo[arch]['embed_dims'][-1]
    # Earlier Runner tests may leave mmdet or mmseg as the default scope.
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return PRETRAIN_MODELS.build(dict(
            type='ImageClassifier',
            backbone=dict(type='SECViT', arch=arch, **backbone),
            head=dict(type='SECViTClsHead', num_classes=1000, in_channels=channels)))


@pytest.mark.parametrize('arch', sorted(RELEASED_PARAMS))
def test_released_parameter_counts_are_exact(arch, reference_dir):
    with torch.device('meta'):
        model = build_classifier(arch)
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert total == RELEASED_PARAMS[arch]
    # The reference key lists state the backbone-only count too.
    header = (reference_dir / f'official_secvit_{arch}_keys.tsv').read_text().splitlines()[0]
    backbone_only = int(re.search(r'backbone-only \(patch_embed\+layers\) params (\d+)',
                                  header)[1])
    assert sum(p.numel() for p in model.backbone.parameters()) == backbone_only


@pytest.mark.parametrize('arch,paper_millions', [('s-iccv', 27), ('b-iccv', 57),
                                                 ('l-iccv', 101)])
def test_iccv_variants_match_paper_sizes(arch, paper_millions):
    with torch.device('meta'):
        model = build_classifier(arch)
    total = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(total - paper_millions) / paper_millions < 0.03


def test_reproduces_the_released_model(reference_dir):
    """The converted fixture weights reproduce the release's per-stage outputs and logits."""
    fixture = torch.load(reference_dir / 'official_secvit_tiny_fixture.pth', weights_only=False)
    arch = fixture['arch']
    state_dict, inferred = convert_secvit_state_dict(fixture['state_dict'])
    assert inferred['depths'] == arch['depths'] and inferred['num_heads'] == arch['num_heads']
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = PRETRAIN_MODELS.build(dict(
            type='ImageClassifier',
            backbone=dict(
                type='SECViT',
                arch=dict(embed_dims=arch['embed_dims'], depths=arch['depths'],
                          num_heads=arch['num_heads'], mlp_ratios=arch['mlp_ratios'],
                          layer_scales=arch['layerscales']),
                num_clusters=arch['num_clusters'], out_indices=(0, 1, 2, 3), drop_path_rate=0.),
            head=dict(type='SECViTClsHead', num_classes=arch['num_classes'],
                      in_channels=arch['embed_dims'][-1], hidden_channels=arch['projection'])))
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(fixture['input'], stage='backbone')
        logits = model.head(feats)
    assert len(feats) == len(fixture['stage_outputs']) == 4
    for ours, ref in zip(feats, fixture['stage_outputs']):
        assert ours.shape == ref.shape
        assert (ours - ref).abs().max() <= 1e-4
    assert (logits - fixture['logits']).abs().max() <= 1e-4


def test_unknown_arch_lists_valid_names():
    with pytest.raises(ValueError, match=r"Unknown SECViT arch 'x'.*'b-iccv'.*'t'"):
        SECViT(arch='x')
    with pytest.raises(ValueError, match='needs the keys'):
        SECViT(arch=dict(embed_dims=[8, 16, 32, 64]))
    with pytest.raises(ValueError, match='4 entries'):
        SECViT(arch=dict(embed_dims=[8, 16, 32], depths=[1, 1, 1], num_heads=[1, 1, 1]))


def test_cluster_arguments_are_validated():
    with pytest.raises(ValueError, match='not both'):
        SECViT(num_clusters=4, cluster_size=8)
    with pytest.raises(ValueError, match=r'one per stage \(4\)'):
        SECViT(num_clusters=(4, 2))


TINY = dict(embed_dims=[16, 32, 64, 128], depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
            layer_scales=[False, False, True, True])


def test_out_indices_strides_and_norms():
    model = SECViT(arch=TINY, out_indices=(0, 1, 2, 3),
                   out_norm_cfg=dict(type='LN2d', eps=1e-6)).eval()
    feats = model(torch.randn(1, 3, 128, 96))
    assert [tuple(f.shape) for f in feats] == [(1, 16, 32, 24), (1, 32, 16, 12), (1, 64, 8, 6),
                                              (1, 128, 4, 3)]
    assert all(hasattr(model, f'norm{i}') for i in range(4))
    assert not hasattr(SECViT(arch=TINY), 'norm3')
    assert len(SECViT(arch=TINY, out_indices=-1)(torch.randn(1, 3, 64, 64))) == 1


def test_wrong_input_is_rejected():
    model = SECViT(arch=TINY)
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match=r'out_indices.*in \[0, 4\)'):
        SECViT(arch=TINY, out_indices=(4, ))


def test_frozen_stages_and_norm_eval():
    model = SECViT(arch=TINY, frozen_stages=1, norm_eval=True)
    model.train()
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    assert not any(p.requires_grad for p in model.stages[0].parameters())
    assert all(p.requires_grad for p in model.stages[1].parameters())
    assert not model.stages[0].training and model.stages[1].training
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)


def test_with_cp_gives_the_same_output_and_gradients():
    torch.manual_seed(0)
    plain = SECViT(arch=TINY, drop_path_rate=0., out_indices=(0, 3))
    checkpointed = SECViT(arch=TINY, drop_path_rate=0., out_indices=(0, 3), with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    outs = [sum(f.sum() for f in m(x)) for m in (plain, checkpointed)]
    for out, m in zip(outs, (plain, checkpointed)):
        out.backward()
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(plain.stages[0].blocks[0].attn.qkv.weight.grad,
                               checkpointed.stages[0].blocks[0].attn.qkv.weight.grad)


@pytest.mark.parametrize('size', [(224, 224), (200, 328), (97, 131)])
def test_secvit_t_trains_a_step(size):
    torch.manual_seed(0)
    model = build_classifier('t')
    model.init_weights()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randn(2, 3, *size)
    logits = model(images, mode='tensor')
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([1, 7]))
    before = model.backbone.stages[0].blocks[0].attn.qkv.weight.detach().clone()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    optimizer.step()
    assert torch.isfinite(loss)
    assert not torch.equal(before, model.backbone.stages[0].blocks[0].attn.qkv.weight)


@pytest.mark.parametrize('size', [(512, 512), (800, 1344)])
def test_secvit_t_runs_at_dense_prediction_sizes(size):
    model = SECViT(arch='t', out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, *size))
    h, w = size
    assert [tuple(f.shape[-2:]) for f in feats] == [(h // s, w // s) for s in (4, 8, 16, 32)]
    assert all(torch.isfinite(f).all() for f in feats)


def test_cluster_size_mode_matches_count_mode_at_224():
    torch.manual_seed(0)
    by_count = SECViT(arch=TINY).eval()
    by_size = SECViT(arch=TINY, cluster_size=(32, 32, 32, 10**6)).eval()
    by_size.load_state_dict(by_count.state_dict())
    # At 128x128 the stages hold 1024/256/64/16 tokens: 32 tokens per cluster = 32/8/2/1
    # clusters, exactly the default (32, 8, 2, global).
    x = torch.randn(1, 3, 128, 128)
    torch.testing.assert_close(by_count(x), by_size(x))


def test_pretrained_init_with_prefix(tmp_path):
    source = build_classifier(TINY)
    path = tmp_path / 'cls.pth'
    torch.save({'state_dict': source.state_dict()}, path)
    model = SECViT(arch=TINY, out_indices=(0, 1, 2, 3), out_norm_cfg=dict(type='LN2d'),
                   init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    model.init_weights()
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_pretrained_init_rejects_checkpoints_that_do_not_fit(tmp_path, reference_dir):
    source = build_classifier(TINY)
    path = tmp_path / 'cls.pth'
    torch.save({'state_dict': source.state_dict()}, path)
    wrong_arch = SECViT(arch='t', init_cfg=dict(
        type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    with pytest.raises(CheckpointMismatchError, match='Shape mismatches'):
        wrong_arch.init_weights()
    no_prefix = SECViT(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointMismatchError, match="prefix='backbone.'"):
        no_prefix.init_weights()
    # An unconverted release file points at the converter.
    fixture = torch.load(reference_dir / 'official_secvit_tiny_fixture.pth', weights_only=False)
    raw = tmp_path / 'released.pth'
    torch.save({'model': fixture['state_dict']}, raw)
    released = SECViT(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=str(raw)))
    with pytest.raises(CheckpointMismatchError, match='secvit_to_mm.py'):
        released.init_weights()
