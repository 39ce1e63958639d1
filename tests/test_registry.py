import subprocess
import sys

import pytest
import torch

import sec_mm  # noqa: F401
from sec_mm.models import SECAttention, SECViT
from sec_mm.utils import CODEBASES


@pytest.mark.parametrize('codebase', CODEBASES)
def test_models_are_registered_in_every_codebase(codebase):
    registry = __import__(f'{codebase}.registry', fromlist=['MODELS']).MODELS
    backbone = registry.build(dict(type='SECViT', arch=dict(
        embed_dims=[8, 16, 32, 64], depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8])))
    assert isinstance(backbone, SECViT)
    attn = registry.build(dict(type='SECAttention', embed_dims=16, num_heads=2, num_clusters=2))
    assert isinstance(attn, SECAttention)
    assert attn(torch.randn(1, 16, 4, 4)).shape == (1, 16, 4, 4)


def test_out_norm_builds_in_every_scope():
    from mmengine.registry import DefaultScope
    for scope in CODEBASES:
        with DefaultScope.overwrite_default_scope(scope):
            model = SECViT(arch=dict(embed_dims=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                                     num_heads=[1, 2, 4, 8]),
                           out_norm_cfg=dict(type='LN2d', eps=1e-6))
        out = model(torch.randn(1, 3, 64, 64))[0]
        # Every pixel's channels are normalised.
        torch.testing.assert_close(out.mean(1), torch.zeros_like(out.mean(1)), atol=1e-5,
                                   rtol=0)


@pytest.mark.parametrize('missing', CODEBASES)
def test_import_works_without_one_codebase(missing):
    """`import sec_mm` registers into whatever subset of the three is installed."""
    script = (
        'import sys\n'
        f'sys.modules[{missing!r}] = None  # make `import {missing}` fail\n'
        'import sec_mm\n'
        'from sec_mm.registry import installed_model_registries\n'
        'print(sorted(r.scope for r in installed_model_registries()))\n'
        "print([r.build(dict(type='SECViT', arch='t')).__class__.__name__ "
        'for r in installed_model_registries()])\n')
    run = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    scopes = eval(run.stdout.splitlines()[0])
    assert scopes == sorted(set(CODEBASES) - {missing})
    assert run.stdout.splitlines()[1] == str(['SECViT', 'SECViT'])
