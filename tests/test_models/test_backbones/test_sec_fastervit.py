"""SEC-FasterViT: FasterViT (the ``fastervit`` extra) with SEC attention in stages 3-4."""
import re
import runpy
import subprocess
import sys
import textwrap

import pytest
import torch
from mmdet.registry import MODELS as DET_MODELS
from mmengine.config import Config
from mmpretrain.registry import MODELS as PRETRAIN_MODELS
from mmseg.registry import MODELS as SEG_MODELS

import sec_mm  # noqa: F401
from sec_mm.models import SECFasterViT, SECMultiheadAttention
from sec_mm.models.backbones.sec_fastervit import map_coordinates
from sec_mm.checkpoint import CheckpointMismatchError

EXTRA = 'SEC-FasterViT needs the fastervit extra: pip install "sec_mm[fastervit]"'
TINY = dict(embed_dims=[16, 32, 64, 128], stem_channels=16, depths=[1, 1, 2, 2],
            num_heads=[None, None, 2, 4])
CONFIGS = {arch: f'configs/classification/sec_fastervit/sec-fastervit-{arch}_8xb128_in1k.py'
           for arch in ('0', '1')}
# Stage 3's carrier-token and window-attention parts of a FasterViT block, and stage 4's.
STAGE3_REPLACED = re.compile(r'levels\.2\.(global_tokenizer\.|blocks\.\d+\.(hat_|pos_embed\.|'
                             r'attn\.pos_emb_funct\.))')
STAGE4_REPLACED = re.compile(r'levels\.3\.blocks\.\d+\.attn\.pos_emb_funct\.')


pytestmark = pytest.mark.usefixtures('single_thread')


@pytest.fixture(scope='module')
def fastervit():
    return pytest.importorskip('fastervit', reason=EXTRA)


def classifier(arch, **backbone):
    return PRETRAIN_MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='SECFasterViT', arch=arch, **backbone),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=1000,
                  in_channels=SECFasterViT.arch_zoo[arch]['embed_dims'][-1])))


def listed_keys(messages, marker):
    lines = [m for m in messages if marker in m]
    assert len(lines) == 1, lines
    return set(lines[0].split(': ')[-1].split(', '))


def test_sec_mm_imports_and_registers_without_the_extra():
    """With fastervit and timm absent, sec_mm imports, SECFasterViT is registered and building
    it says how to install the extra."""
    code = textwrap.dedent('''
        import sys
        sys.modules['fastervit'] = sys.modules['timm'] = None  # make their imports fail
        import sec_mm
        from mmpretrain.registry import MODELS
        from sec_mm.models import SECFasterViT, SECViT
        assert MODELS.get('SECFasterViT') is SECFasterViT
        SECViT(arch={'embed_dims': [8, 16, 32, 64], 'depths': [1, 1, 1, 1],
                     'num_heads': [1, 1, 1, 1]})
        try:
            MODELS.build(dict(type='SECFasterViT'))
        except ImportError as error:
            print(error)
    ''')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Install the extra: pip install "sec_mm[fastervit]"' in result.stdout


@pytest.mark.parametrize('registry', [PRETRAIN_MODELS, DET_MODELS, SEG_MODELS])
def test_builds_through_every_registry(fastervit, registry):
    model = registry.build(dict(type='SECFasterViT', arch=TINY, out_indices=(0, 1, 2, 3)))
    assert isinstance(model, SECFasterViT)
    faster_vit = fastervit.models.faster_vit
    assert not any(isinstance(m, (faster_vit.HAT, faster_vit.WindowAttention,
                                  faster_vit.TokenInitializer)) for m in model.modules())
    # Stages 1-2 are FasterViT's own conv stages.
    assert [type(level) for level in model.levels[:2]] == [faster_vit.FasterViTLayer] * 2
    attn = [[block.attn for block in model.levels[i].blocks] for i in (2, 3)]
    assert all(isinstance(a, SECMultiheadAttention) and a.rope is not None
               and a.lce is not None for stage in attn for a in stage)
    assert [[a.num_clusters for a in stage] for stage in attn] == [[2, 2], [-1, -1]]
    # The token position MLP stays in stage 4 only (see the class docstring).
    assert [[b.pos_embed is None for b in model.levels[i].blocks] for i in (2, 3)] == [
        [True, True], [False, False]]


def test_out_indices_shapes_and_a_training_step_at_odd_sizes(fastervit):
    torch.manual_seed(0)
    model = SECFasterViT(arch=TINY, out_indices=(0, 1, 2, 3), drop_path_rate=0.1,
                         cluster_size=5)
    model.init_weights()
    model.train()
    outs = model(torch.randn(2, 3, 70, 45))
    assert [tuple(o.shape) for o in outs] == [(2, 16, 18, 12), (2, 32, 9, 6), (2, 64, 5, 3),
                                              (2, 128, 3, 2)]
    sum(o.square().mean() for o in outs).backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())

    model = SECFasterViT(arch=TINY, out_indices=(1, -1)).eval()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 8, 8), (1, 128, 2, 2)]


def test_bad_arguments_raise(fastervit):
    with pytest.raises(ValueError, match=r'Unknown SECFasterViT arch .2.'):
        SECFasterViT(arch='2')
    with pytest.raises(ValueError, match=r'must be \[C, 2C, 4C, 8C\]'):
        SECFasterViT(arch={**TINY, 'embed_dims': [16, 32, 64, 64]})
    with pytest.raises(ValueError, match=r'one per attention stage \(2\)'):
        SECFasterViT(arch=TINY, num_clusters=[32, 8, 2, -1])
    with pytest.raises(ValueError, match=r'out_indices entries must be stage indices'):
        SECFasterViT(arch=TINY, out_indices=(4, ))
    with pytest.raises(ValueError, match=r'expects images of shape \(B, 3, H, W\)'):
        SECFasterViT(arch=TINY)(torch.randn(1, 1, 32, 32))


@pytest.mark.parametrize('arch,paper_millions,fastervit_millions',
                         [('0', 25, 31.4), ('1', 41, 53.4)])
def test_parameter_counts_match_the_paper(fastervit, arch, paper_millions,
                                          fastervit_millions):
    total = sum(p.numel() for p in classifier(arch).parameters()) / 1e6
    assert abs(total - paper_millions) <= 1.0, total
    stock = fastervit.create_model(f'faster_vit_{arch}_224')
    assert sum(p.numel() for p in stock.parameters()) / 1e6 == pytest.approx(
        fastervit_millions, abs=0.05)


def test_frozen_stages_and_norm_eval(fastervit):
    model = SECFasterViT(arch=TINY, frozen_stages=2, norm_eval=True)
    model.train()
    frozen = [model.patch_embed, model.levels[0], model.levels[1]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(not m.training for part in frozen for m in part.modules())
    assert all(p.requires_grad for m in model.levels[2:] for p in m.parameters())
    assert model.levels[2].training and model.levels[2].blocks[0].attn.training
    assert all(not m.training for m in model.modules()
               if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    model = SECFasterViT(arch=TINY, frozen_stages=4).train()
    assert not any(p.requires_grad for p in model.parameters())


@pytest.fixture(scope='module')
def fastervit_0_checkpoint(fastervit, tmp_path_factory):
    """FasterViT-0 from NVIDIA's implementation with random weights, saved as a state dict."""
    stock = fastervit.create_model('faster_vit_0_224', pretrained=False).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for value in stock.state_dict().values():
            if value.is_floating_point():
                value.add_(0.02 * torch.randn(value.shape, generator=generator))
    path = tmp_path_factory.mktemp('fastervit') / 'faster_vit_0_224.pth'
    torch.save(stock.state_dict(), path)
    return path, stock


def test_loads_a_fastervit_0_checkpoint(fastervit_0_checkpoint, mm_log_messages):
    path, stock = fastervit_0_checkpoint
    state = stock.state_dict()
    model = SECFasterViT(arch='0', out_indices=(0, 1, 2, 3),
                         init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()

    replaced = {k for k in state if STAGE3_REPLACED.match(k) or STAGE4_REPLACED.match(k)}
    assert any('.hat_attn.' in k for k in replaced) and any('tokenizer' in k for k in replaced)
    assert listed_keys(mm_log_messages, 'that SEC attention replaces') == replaced
    assert listed_keys(mm_log_messages, 'classifier head') == {'head.weight', 'head.bias'}
    ours = model.state_dict()
    lce = {k for k in ours if '.attn.lce.' in k}
    assert len(lce) == 2 * (6 + 5)
    assert listed_keys(mm_log_messages, 'newly initialised') == lce
    shared = set(state) - replaced - {'head.weight', 'head.bias'}
    assert set(ours) - lce == shared
    assert all(torch.equal(ours[k], state[k]) for k in shared)

    # The conv stages compute what FasterViT's do.
    model.eval()
    image = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        outs = model(image)
        x = stock.patch_embed(image)
        for block in stock.levels[0].blocks:
            x, _ = block(x)
        torch.testing.assert_close(outs[0], x)
        x = stock.levels[0].downsample(x)
        for block in stock.levels[1].blocks:
            x, _ = block(x)
        torch.testing.assert_close(outs[1], x)
        # Stage 4's position MLP gives FasterViT's embedding of the 7x7 map.
        ours_block, stock_block = model.levels[3].blocks[0], stock.levels[3].blocks[0]
        expected = stock_block.pos_embed(torch.zeros(1, 49, 512))
        got = ours_block.pos_embed.cpb_mlp(map_coordinates(7, 7, 'cpu', torch.float32))
        torch.testing.assert_close(got[None], expected)


def test_classifier_state_dict_loads_through_the_hook(fastervit_0_checkpoint, mm_log_messages):
    """``load_from`` / ``load_checkpoint``: FasterViT keys under ``backbone.`` load into an
    mmpretrain classifier with plain ``load_state_dict``."""
    _, stock = fastervit_0_checkpoint
    state = {f'backbone.{k}': v for k, v in stock.state_dict().items()
             if not k.startswith('head.')}
    model = classifier('0')
    result = model.load_state_dict(state, strict=False)
    assert result.unexpected_keys == []
    assert set(result.missing_keys) == {f'backbone.{k}' for k in model.backbone.state_dict()
                                        if '.attn.lce.' in k} | {'head.fc.weight',
                                                                 'head.fc.bias'}
    assert len([m for m in mm_log_messages if 'that SEC attention replaces' in m]) == 1


def test_strict_loading_raises_on_a_misfit(fastervit_0_checkpoint, tmp_path):
    path = fastervit_0_checkpoint[0]
    # A FasterViT-0 checkpoint for a narrower arch.
    model = SECFasterViT(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointMismatchError, match='Shape mismatches'):
        model.init_weights()

    state = dict(torch.load(path))
    del state['levels.2.blocks.0.mlp.fc1.weight']
    path = tmp_path / 'faster_vit_0_incomplete.pth'
    torch.save({'state_dict': state}, path)
    model = SECFasterViT(arch='0', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointMismatchError,
                       match=r'Missing keys \(1\): levels\.2\.blocks\.0\.mlp\.fc1\.weight'):
        model.init_weights()


@pytest.mark.parametrize('arch', ['0', '1'])
def test_configs_build_the_paper_models(fastervit, repo_root, arch):
    cfg = Config.fromfile(repo_root / CONFIGS[arch])
    assert cfg.custom_imports == dict(imports=['sec_mm'], allow_failed_imports=False)
    model = PRETRAIN_MODELS.build(cfg.model)
    assert isinstance(model.backbone, SECFasterViT)
    assert model.backbone.arch_settings == SECFasterViT.arch_zoo[arch]
    total = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(total - {'0': 25, '1': 41}[arch]) <= 1.0, total
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64), mode='tensor')
    assert logits.shape == (1, 1000)


def test_get_flops_prints_the_flops(fastervit, repo_root, monkeypatch, capsys):
    tool = repo_root / 'tools' / 'analysis_tools' / 'get_flops.py'
    monkeypatch.setattr(sys, 'argv', [str(tool), str(repo_root / CONFIGS['0'])])
    runpy.run_path(str(tool), run_name='__main__')
    output = capsys.readouterr().out
    assert 'Params:        25.06 M' in output
    # SEC attention products at 224, by hand: stage 3, 6 blocks x 8 heads x 2 clusters of 98
    # tokens; stage 4, 5 blocks x 16 heads x 49 tokens; head dims 32: 98^2 * 64 multiply-adds
    # per cluster and head.
    by_hand = (6 * 8 * 2 * 98**2 * 64 + 5 * 16 * 49**2 * 64) / 1e9
    attention = float(re.search(r'attention:\s+([\d.]+) G', output).group(1))
    assert attention == pytest.approx(by_hand, abs=0.005)
    flops = float(re.search(r'FLOPs:\s+([\d.]+) G', output).group(1))
    assert 3.0 < flops < 3.6
