"""Every load of weights into a SEC backbone (or, for testing and resuming, into a whole
model) raises on keys that do not fit, naming them, whoever loads."""
import pytest
import torch
from mmengine.runner.checkpoint import load_checkpoint

from sec_mm.models import SECSwinTransformer, SECViT, SECVisionTransformer
from sec_mm.checkpoint import CheckpointMismatchError
from sec_mm.checkpoint import require_fitting_checkpoints

TINY = dict(embed_dims=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8])


def deeper(arch, stage=2):
    depths = list(arch['depths'])
    depths[stage] += 1
    return dict(arch, depths=depths)


def test_secvit_of_another_arch_raises_for_every_loader(tmp_path):
    small, large = SECViT(TINY), SECViT(deeper(TINY))
    # torch's load_state_dict, even with strict=False
    with pytest.raises(CheckpointMismatchError,
                       match=r'Missing keys \(\d+\): stages\.2\.blocks\.1\.'):
        large.load_state_dict(small.state_dict(), strict=False)
    with pytest.raises(CheckpointMismatchError,
                       match=r'Unexpected keys \(\d+\): stages\.2\.blocks\.1\.'):
        small.load_state_dict(large.state_dict(), strict=False)
    # mmengine's load_checkpoint (load_from, --resume, tools/test.py, the inferencers), with
    # the backbone inside a model.
    path = tmp_path / 'small.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in small.state_dict().items()}},
               path)
    model = torch.nn.Module()
    model.backbone = large
    with pytest.raises(CheckpointMismatchError,
                       match=r"SECViT \(keys under 'backbone\.'\)(.|\n)*stages\.2\.blocks\.1"):
        load_checkpoint(model, str(path), map_location='cpu')


def test_secvit_shape_mismatch_and_optional_output_norms():
    wide = dict(TINY, embed_dims=[16, 32, 64, 256])
    with pytest.raises(CheckpointMismatchError, match=r'Shape mismatches.*checkpoint \(128'):
        SECViT(wide).load_state_dict(SECViT(TINY).state_dict(), strict=False)
    # A classification backbone's weights into a dense-prediction one: its output norms are
    # new (and stay as initialised), everything else must be there.
    dense = SECViT(TINY, out_indices=(0, 1, 2, 3), out_norm_cfg=dict(type='LN2d'))
    result = dense.load_state_dict(SECViT(TINY).state_dict(), strict=False)
    assert sorted({k.split('.')[0] for k in result.missing_keys}) == [
        'norm0', 'norm1', 'norm2', 'norm3']


def test_sec_swin_and_sec_deit_of_another_arch_raise():
    swin = dict(embed_dims=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8])
    with pytest.raises(CheckpointMismatchError, match=r'Missing keys.*stages\.2\.blocks\.1'):
        SECSwinTransformer(deeper(swin)).load_state_dict(
            SECSwinTransformer(swin).state_dict(), strict=False)
    vit = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)
    with pytest.raises(CheckpointMismatchError, match=r'Missing keys.*layers\.2\.'):
        SECVisionTransformer(dict(vit, num_layers=3), img_size=32).load_state_dict(
            SECVisionTransformer(vit, img_size=32).state_dict(), strict=False)


def test_whole_model_check_names_head_keys(tmp_path):
    """tools/test.py and --resume: every key of the model, not only the backbone's."""
    from mmpretrain.models import ImageClassifier
    from mmpretrain.registry import MODELS

    def classifier(num_classes):
        return MODELS.build(dict(
            type='ImageClassifier', backbone=dict(type='SECViT', arch=TINY),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=num_classes, in_channels=128)))

    path = tmp_path / 'three_classes.pth'
    torch.save({'state_dict': classifier(3).state_dict()}, path)
    model = classifier(5)
    assert isinstance(model, ImageClassifier)
    load_checkpoint(model, str(path))  # mmengine only warns about the head ...
    require_fitting_checkpoints(model)
    with pytest.raises(CheckpointMismatchError,
                       match=r'the ImageClassifier model.*\n.*head\.fc\.weight: checkpoint '
                       r'\(3, 128\) vs model \(5, 128\)'):
        load_checkpoint(model, str(path))  # ... which now stops the load
