"""The authors' released SECViT checkpoints -> mmpretrain ``ImageClassifier`` keys.

The key rules of the release live here, next to the converter
(``tools/model_converters/secvit_to_mm.py``), not in the models: the models load converted
files strictly and, given a release file, say to convert it first.
"""
import re
from collections import OrderedDict
from typing import Dict, Mapping, Tuple

import torch
from torch import Tensor

from sec_mm.models import SECViT
from sec_mm.checkpoint import (CheckpointMismatchError, check_state_dict_fits,
                                     extract_state_dict, format_keys)

__all__ = ['convert_secvit_state_dict', 'infer_secvit_arch', 'expected_secvit_classifier_keys']

_STEM = {'0': '0.conv', '1': '0.bn', '3': '1.conv', '4': '1.bn', '6': '2.conv', '7': '2.bn',
         '9': '3.conv', '10': '3.bn'}
_BLOCK = {'pos': 'cpe', 'norm1.norm': 'norm1', 'norm2.norm': 'norm2', 'attn.qkv': 'attn.qkv',
          'attn.lepe': 'attn.lce', 'attn.out_proj': 'attn.proj', 'ffn.fc1': 'ffn.fc1',
          'ffn.fc2': 'ffn.fc2', 'ffn.dwconv': 'ffn.dwconv'}
_RULES = [
    (re.compile(r'^patch_embed\.proj\.(\d+)\.(.+)$'),
     lambda m: f'backbone.patch_embed.{_STEM[m[1]]}.{m[2]}' if m[1] in _STEM else None),
    (re.compile(r'^layers\.(\d+)\.blocks\.(\d+)\.gamma_([12])$'),
     lambda m: f'backbone.stages.{m[1]}.blocks.{m[2]}.gamma{m[3]}'),
    (re.compile(r'^layers\.(\d+)\.blocks\.(\d+)\.(.+)\.(weight|bias)$'),
     lambda m: (f'backbone.stages.{m[1]}.blocks.{m[2]}.{_BLOCK[m[3]]}.{m[4]}'
                if m[3] in _BLOCK else None)),
    (re.compile(r'^layers\.(\d+)\.downsample\.reduction\.(.+)$'),
     lambda m: f'backbone.stages.{m[1]}.downsample.conv.{m[2]}'),
    (re.compile(r'^layers\.(\d+)\.downsample\.norm\.(.+)$'),
     lambda m: f'backbone.stages.{m[1]}.downsample.bn.{m[2]}'),
    (re.compile(r'^proj\.(.+)$'), lambda m: f'head.proj.{m[1]}'),
    (re.compile(r'^norm\.(.+)$'), lambda m: f'head.norm.{m[1]}'),
    (re.compile(r'^head\.(weight|bias)$'), lambda m: f'head.fc.{m[1]}'),
]
_ROPE = re.compile(r'^layers\.(\d+)\.RoPE\.angle$')


def _rope_angle(head_dims: int) -> Tensor:
    return (1. / 10000**torch.linspace(0, 1, head_dims // 4)).repeat_interleave(2)


def infer_secvit_arch(released: Mapping[str, Tensor]) -> dict:
    """Read the SECViT architecture off a released state dict.

    Returns:
        dict: ``embed_dims``, ``depths``, ``num_heads``, ``mlp_ratios``, ``layer_scales``
        (per stage), ``head_channels`` and ``num_classes``.
    """
    arch = {k: [] for k in ('embed_dims', 'depths', 'num_heads', 'mlp_ratios', 'layer_scales')}
    for i in range(4):
        needed = [f'layers.{i}.blocks.0.norm1.norm.weight', f'layers.{i}.RoPE.angle',
                  f'layers.{i}.blocks.0.ffn.fc1.weight']
        absent = [k for k in needed if k not in released]
        if absent:
            raise CheckpointMismatchError(
                f'Not a SECViT release state dict: it lacks {format_keys(absent)}.')
        channels = released[needed[0]].shape[0]
        head_dims = 2 * released[needed[1]].numel()
        arch['embed_dims'].append(channels)
        arch['depths'].append(len({
            k.split('.')[3] for k in released if k.startswith(f'layers.{i}.blocks.')}))
        arch['num_heads'].append(channels // head_dims)
        arch['mlp_ratios'].append(released[needed[2]].shape[0] / channels)
        arch['layer_scales'].append(f'layers.{i}.blocks.0.gamma_1' in released)
    if 'proj.weight' not in released or 'head.weight' not in released:
        raise CheckpointMismatchError('Not a SECViT release classifier: `proj.weight` or '
                                      '`head.weight` is missing.')
    arch['head_channels'] = released['proj.weight'].shape[0]
    arch['num_classes'] = released['head.weight'].shape[0]
    return arch


def convert_secvit_state_dict(released: Mapping[str, Tensor]
                              ) -> Tuple['OrderedDict[str, Tensor]', dict]:
    """Convert the authors' released SECViT classifier weights to mmpretrain keys.

    The result is the state dict of an ``ImageClassifier`` with a
    :class:`~sec_mm.models.SECViT` backbone and an ``SECViTClsHead``; its ``backbone.`` part
    loads into detection and segmentation backbones with ``prefix='backbone.'``.

    Args:
        released: The ``model`` (or ``model_ema``) entry of a released checkpoint.

    Returns:
        tuple: The converted state dict and the architecture read off the weights.

    Raises:
        CheckpointMismatchError: naming every key the converter does not know, every key the
            target model needs and did not get, and RoPE tables that differ from the formula.
    """
    released = extract_state_dict(released)
    arch = infer_secvit_arch(released)
    converted, unknown, bad_rope = OrderedDict(), [], []
    for key, value in released.items():
        rope = _ROPE.match(key)
        if rope:
            # Derived from the head dimension and rebuilt by the model, so not stored.
            if not torch.allclose(value.float(), _rope_angle(2 * value.numel()), rtol=1e-5):
                bad_rope.append(key)
            continue
        for pattern, target in _RULES:
            match = pattern.match(key)
            new_key = target(match) if match else None
            if new_key:
                break
        if not new_key:
            unknown.append(key)
            continue
        if new_key == 'head.fc.weight' and value.dim() == 4:
            value = value.flatten(1)  # the release's 1x1 conv classifier as a Linear
        converted[new_key] = value
    if unknown or bad_rope:
        raise CheckpointMismatchError(
            'Cannot convert this SECViT checkpoint.'
            + (f'\nKeys the converter does not know ({len(unknown)}): {format_keys(unknown)}'
               if unknown else '')
            + (f'\nRoPE tables that differ from the released formula: {format_keys(bad_rope)}'
               if bad_rope else ''))
    check_state_dict_fits(
        expected_secvit_classifier_keys(arch), converted,
        what=f'an SECViT classifier of arch {arch}')
    return converted, arch


def expected_secvit_classifier_keys(arch: dict) -> Dict[str, Tuple[int, ...]]:
    """Key -> shape of the mmpretrain SECViT classifier for an arch from
    :func:`infer_secvit_arch`."""
    # Built on the meta device: the shapes without allocating the weights.
    with torch.device('meta'):
        backbone = SECViT(arch={k: arch[k] for k in (
            'embed_dims', 'depths', 'num_heads', 'mlp_ratios', 'layer_scales')})
    keys = {f'backbone.{k}': tuple(v.shape) for k, v in backbone.state_dict().items()}
    hidden, classes, channels = arch['head_channels'], arch['num_classes'], arch['embed_dims'][-1]
    keys.update({
        'head.proj.weight': (hidden, channels, 1, 1), 'head.proj.bias': (hidden, ),
        'head.norm.weight': (hidden, ), 'head.norm.bias': (hidden, ),
        'head.norm.running_mean': (hidden, ), 'head.norm.running_var': (hidden, ),
        'head.norm.num_batches_tracked': (), 'head.fc.weight': (classes, hidden),
        'head.fc.bias': (classes, )})
    return keys
