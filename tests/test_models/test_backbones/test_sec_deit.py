import pytest
import torch
from mmcv.cnn.bricks.drop import DropPath
from mmdet.registry import MODELS as DET_MODELS
from mmpretrain.models import VisionTransformer
from mmpretrain.models.utils import LayerScale, MultiheadAttention
from mmpretrain.registry import MODELS as PRETRAIN_MODELS
from mmseg.registry import MODELS as SEG_MODELS

import sec_mm  # noqa: F401
from sec_mm.models import SECMultiheadAttention, SECVisionTransformer
from sec_mm.checkpoint import CheckpointMismatchError

TINY = dict(embed_dims=32, num_layers=3, num_heads=2, feedforward_channels=64)



pytestmark = pytest.mark.usefixtures('single_thread')


@pytest.mark.parametrize('registry', [
    PRETRAIN_MODELS,
    pytest.param(DET_MODELS, marks=pytest.mark.mmcv_ops),
    pytest.param(SEG_MODELS, marks=pytest.mark.mmcv_ops)])
def test_builds_through_every_registry(registry):
    model = registry.build(dict(type='SECVisionTransformer', arch=TINY, img_size=64))
    assert isinstance(model, SECVisionTransformer)
    assert all(type(layer.attn) is SECMultiheadAttention for layer in model.layers)
    assert [layer.attn.num_clusters for layer in model.layers] == [4, 4, 4]
    assert all(layer.attn.num_extra_tokens == 1 for layer in model.layers)


@pytest.mark.parametrize('arch,paper_millions', [('deit-small', 22), ('deit-base', 86)])
def test_parameter_counts_match_the_paper(arch, paper_millions):
    model = PRETRAIN_MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='SECVisionTransformer', arch=arch),
        head=dict(type='VisionTransformerClsHead', num_classes=1000,
                  in_channels=VisionTransformer.arch_zoo[arch]['embed_dims'])))
    total = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(total - paper_millions) <= 1.0, total


def test_only_the_attention_changes():
    """Same keys as mmpretrain's ViT; layer scale and stochastic depth are the parent's."""
    settings = dict(arch=TINY, img_size=64, drop_path_rate=0.2, layer_scale_init_value=0.1)
    stock = VisionTransformer(**settings)
    sec = SECVisionTransformer(num_clusters=2, **settings)
    assert {k: v.shape for k, v in sec.state_dict().items()} == \
        {k: v.shape for k, v in stock.state_dict().items()}
    for stock_layer, sec_layer in zip(stock.layers, sec.layers):
        assert type(stock_layer.attn) is MultiheadAttention
        assert isinstance(sec_layer.attn.gamma1, LayerScale)
        assert torch.equal(sec_layer.attn.gamma1.weight, stock_layer.attn.gamma1.weight)
        assert isinstance(sec_layer.attn.out_drop, DropPath)
        assert sec_layer.attn.out_drop.drop_prob == stock_layer.attn.out_drop.drop_prob


@pytest.mark.parametrize('out_type', ['cls_token', 'featmap'])
def test_one_cluster_is_mmpretrain_deit_s(out_type, randomize):
    stock = randomize(VisionTransformer('deit-small', out_type=out_type))
    sec = SECVisionTransformer('deit-small', num_clusters=1, out_type=out_type)
    sec.load_state_dict(stock.state_dict(), strict=True)
    stock.eval()  # mmpretrain's train() returns None, so not chained
    sec.eval()
    images = torch.randn(2, 3, 224, 224)
    odd = torch.randn(1, 3, 90, 123)  # position embedding resized, patches padded
    with torch.no_grad():
        assert torch.equal(sec(images)[0], stock(images)[0])
        assert torch.equal(sec(odd)[0], stock(odd)[0])
        # The default 4 clusters do change the features.
        for layer in sec.layers:
            layer.attn.num_clusters = 4
        assert not torch.allclose(sec(images)[0], stock(images)[0], atol=1e-3)


def test_trains_a_step_at_odd_sizes():
    torch.manual_seed(0)
    model = SECVisionTransformer(arch=TINY, img_size=64, out_type='featmap',
                                 out_indices=[1, 2], drop_path_rate=0.1, num_clusters=3)
    model.init_weights()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.layers[0].attn.qkv.weight.detach().clone()
    outs = model(torch.randn(2, 3, 53, 75))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 4, 5)] * 2
    sum(o.square().mean() for o in outs).backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    optimizer.step()
    assert not torch.equal(before, model.layers[0].attn.qkv.weight)


def test_frozen_layers_include_their_sec_attention():
    model = SECVisionTransformer(arch=TINY, img_size=64, frozen_stages=2)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert {'layers.0.attn.qkv.weight', 'layers.1.attn.proj.bias'} <= frozen
    assert 'layers.2.attn.qkv.weight' not in frozen


def test_cluster_settings():
    model = SECVisionTransformer(arch=TINY, img_size=64, num_clusters=[2, 4, 8])
    assert [layer.attn.num_clusters for layer in model.layers] == [2, 4, 8]
    model = SECVisionTransformer(arch=TINY, img_size=64, cluster_size=49)
    assert {layer.attn.cluster_size for layer in model.layers} == {49}
    with pytest.raises(ValueError, match='not both'):
        SECVisionTransformer(arch=TINY, num_clusters=2, cluster_size=3)
    with pytest.raises(ValueError, match=r'one per layer \(3\)'):
        SECVisionTransformer(arch=TINY, num_clusters=[2, 2])
    with pytest.raises(ValueError, match='attn_drop_rate'):
        SECVisionTransformer(arch=TINY, layer_cfgs=dict(attn_drop_rate=0.1))


@pytest.fixture(scope='module')
def mmpretrain_deit_s(tmp_path_factory):
    """An mmpretrain DeiT-S classifier with random weights, saved as mmpretrain saves it."""
    torch.manual_seed(0)
    stock = PRETRAIN_MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='VisionTransformer', arch='deit-small'),
        head=dict(type='VisionTransformerClsHead', num_classes=1000, in_channels=384),
        init_cfg=[dict(type='TruncNormal', layer='Linear', std=.02),
                  dict(type='Constant', layer='LayerNorm', val=1., bias=0.)]))
    stock.init_weights()
    state = stock.state_dict()
    path = tmp_path_factory.mktemp('deit') / 'deit-small_in1k.pth'
    torch.save({'state_dict': state, 'meta': {}}, path)
    return path, state


def test_loads_an_mmpretrain_deit_s_checkpoint(mmpretrain_deit_s, mm_log_messages):
    path, state = mmpretrain_deit_s
    model = SECVisionTransformer(
        'deit-small', init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    model.init_weights()
    loaded = [m for m in mm_log_messages if m.startswith('Loaded ')]
    assert len(loaded) == 1 and 'newly initialised' not in loaded[0]
    assert not [m for m in mm_log_messages if 'skipped' in m]
    ours = model.state_dict()
    stock = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    assert set(ours) == set(stock)
    assert all(torch.equal(ours[k], stock[k]) for k in stock)


def test_dense_prediction_input_size_resizes_the_position_embedding(mmpretrain_deit_s):
    path, state = mmpretrain_deit_s
    model = SECVisionTransformer(
        'deit-small', img_size=128, out_type='featmap', out_indices=(11, ),
        init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    model.init_weights()
    assert model.pos_embed.shape == (1, 1 + 8 * 8, 384)
    assert torch.equal(model.cls_token, state['backbone.cls_token'])
    with torch.no_grad():
        assert tuple(model(torch.randn(1, 3, 128, 96))[0].shape) == (1, 384, 8, 6)


def test_checkpoint_that_does_not_fit_raises(mmpretrain_deit_s):
    path, _ = mmpretrain_deit_s
    model = SECVisionTransformer(
        'deit-small', final_norm=False,
        init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    with pytest.raises(CheckpointMismatchError, match=r'Unexpected keys \(2\): ln1.bias'):
        model.init_weights()
