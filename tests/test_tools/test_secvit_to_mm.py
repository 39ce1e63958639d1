import subprocess
import sys

import torch
from mmdet.registry import MODELS as DET_MODELS

import sec_mm  # noqa: F401


def test_converter_cli_output_loads_into_a_detection_backbone(tmp_path, repo_root,
                                                              reference_dir):
    fixture = torch.load(reference_dir / 'official_secvit_tiny_fixture.pth', weights_only=False)
    ema = {k: v + 1 if v.is_floating_point() and 'RoPE' not in k else v
           for k, v in fixture['state_dict'].items()}
    src, dst = tmp_path / 'released.pth', tmp_path / 'converted.pth'
    torch.save({'model': fixture['state_dict'], 'model_ema': ema}, src)

    run = subprocess.run(
        [sys.executable, 'tools/model_converters/secvit_to_mm.py', str(src), str(dst), '--ema'],
        cwd=repo_root, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "arch 'custom'" in run.stdout and 'EMA' in run.stdout
    converted = torch.load(dst, weights_only=True)
    assert converted['meta']['ema'] is True

    arch = fixture['arch']
    backbone = DET_MODELS.build(dict(
        type='SECViT',
        arch=dict(embed_dims=arch['embed_dims'], depths=arch['depths'],
                  num_heads=arch['num_heads'], layer_scales=arch['layerscales']),
        out_indices=(0, 1, 2, 3), out_norm_cfg=dict(type='LN2d', eps=1e-6),
        init_cfg=dict(type='Pretrained', checkpoint=str(dst), prefix='backbone.')))
    backbone.init_weights()
    torch.testing.assert_close(backbone.stages[1].blocks[0].attn.lce.weight,
                               ema['layers.1.blocks.0.attn.lepe.weight'])
    torch.testing.assert_close(backbone.patch_embed[3].bn.running_var,
                               ema['patch_embed.proj.10.running_var'])


def test_converter_cli_reports_bad_keys(tmp_path, repo_root, reference_dir):
    fixture = torch.load(reference_dir / 'official_secvit_tiny_fixture.pth', weights_only=False)
    state = dict(fixture['state_dict'])
    state['layers.9.unknown.weight'] = torch.zeros(2)
    src = tmp_path / 'bad.pth'
    torch.save({'model': state}, src)
    run = subprocess.run(
        [sys.executable, 'tools/model_converters/secvit_to_mm.py', str(src),
         str(tmp_path / 'out.pth')], cwd=repo_root, capture_output=True, text=True)
    assert run.returncode == 1
    assert 'layers.9.unknown.weight' in run.stderr
    assert not (tmp_path / 'out.pth').exists()
