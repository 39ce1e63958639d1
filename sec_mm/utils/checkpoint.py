"""Checkpoint helpers: strict loading and conversion of the released SECViT weights."""
import copy
import functools
import re
from collections import OrderedDict
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor, nn

__all__ = [
    'CheckpointMismatchError', 'pop_pretrained_cfg', 'load_pretrained_into',
    'extract_state_dict', 'convert_secvit_state_dict', 'infer_secvit_arch',
    'check_state_dict_fits', 'require_fitting_state_dict', 'require_fitting_checkpoints'
]


class CheckpointMismatchError(ValueError):
    """A checkpoint whose keys or shapes do not fit the model it is loaded into."""


def _names(keys: Iterable[str], limit: int = 20) -> str:
    keys = sorted(keys)
    shown = ', '.join(keys[:limit])
    return shown + (f', ... ({len(keys) - limit} more)' if len(keys) > limit else '')


def pop_pretrained_cfg(init_cfg: Union[dict, List[dict], None]
                       ) -> Tuple[Optional[dict], Union[dict, List[dict], None]]:
    """Split a ``Pretrained`` entry off an ``init_cfg``; returns ``(pretrained, rest)``."""
    if init_cfg is None:
        return None, None
    cfgs = [init_cfg] if isinstance(init_cfg, dict) else list(init_cfg)
    pretrained = [c for c in cfgs if c.get('type') == 'Pretrained']
    rest = [c for c in cfgs if c.get('type') != 'Pretrained']
    if len(pretrained) > 1:
        raise ValueError(f'init_cfg has more than one Pretrained entry: {pretrained}.')
    return (copy.deepcopy(pretrained[0]) if pretrained else None), (rest or None)


def extract_state_dict(checkpoint: Mapping, use_ema: bool = False) -> 'OrderedDict[str, Tensor]':
    """The weights inside a loaded checkpoint file, without a DataParallel ``module.`` prefix.

    Understands OpenMMLab files (``state_dict``, optionally ``ema_state_dict``), the SECViT
    release (``model`` / ``model_ema``) and bare state dicts.
    """
    if use_ema:
        for key in ('model_ema', 'ema_state_dict'):
            if key in checkpoint:
                state = checkpoint[key]
                break
        else:
            raise CheckpointMismatchError(
                f'EMA weights were asked for but the checkpoint has none; its top-level keys '
                f'are {_names(checkpoint)}. Drop --ema to use the plain weights.')
    elif 'state_dict' in checkpoint:
        state = checkpoint['state_dict']
    elif 'model' in checkpoint and isinstance(checkpoint['model'], Mapping):
        state = checkpoint['model']
    else:
        state = checkpoint
    if isinstance(state, Mapping) and 'state_dict' in state:  # e.g. an EMA wrapper's dict
        state = state['state_dict']
    out = OrderedDict()
    for key, value in state.items():
        if not torch.is_tensor(value):
            raise CheckpointMismatchError(
                f'Checkpoint entry {key!r} is a {type(value).__name__}, not a tensor; is this a '
                f'state dict? Top-level keys: {_names(checkpoint)}.')
        out[key[len('module.'):] if key.startswith('module.') else key] = value
    return out


def _looks_released(keys: Iterable[str]) -> bool:
    return any(k.startswith(('layers.0.', 'patch_embed.proj.')) for k in keys)


def check_state_dict_fits(expected: Mapping[str, Tuple[int, ...]],
                          state_dict: Mapping[str, Tensor],
                          optional_prefixes: Iterable[str] = (),
                          what: str = 'the model',
                          hint: str = 'Check the arch and the `prefix` of the Pretrained '
                          'init_cfg.') -> List[str]:
    """Raise :class:`CheckpointMismatchError` naming every missing, unexpected or misshapen key.

    Args:
        expected: Key -> shape of what is to be loaded into.
        state_dict: The weights.
        optional_prefixes: Keys of ``expected`` under these prefixes may be absent (e.g. the
            output norms a detection backbone adds to a classification checkpoint).
        what: Named in the message.
        hint: The message's last line, unless the keys point at a more specific cause.

    Returns:
        list[str]: The optional keys that were absent.
    """
    optional = tuple(optional_prefixes)
    missing = [k for k in expected if k not in state_dict]
    absent_optional = [k for k in missing if optional and k.startswith(optional)]
    missing = [k for k in missing if k not in absent_optional]
    unexpected = [k for k in state_dict if k not in expected]
    misshapen = [
        f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k])}'
        for k in state_dict if k in expected and tuple(state_dict[k].shape) != tuple(expected[k])
    ]
    if missing or unexpected or misshapen:
        lines = [f'The checkpoint does not fit {what}.']
        if missing:
            lines.append(f'Missing keys ({len(missing)}): {_names(missing)}')
        if unexpected:
            lines.append(f'Unexpected keys ({len(unexpected)}): {_names(unexpected)}')
        if misshapen:
            lines.append(f'Shape mismatches ({len(misshapen)}): {"; ".join(misshapen[:10])}')
        if _looks_released(unexpected):
            lines.append('These look like the authors\' released SECViT keys: convert the file '
                         'first with tools/model_converters/secvit_to_mm.py SRC DST.')
        elif unexpected and all(k.startswith(('backbone.', 'head.', 'neck.'))
                                for k in unexpected):
            lines.append("These are whole-model keys: add prefix='backbone.' to the "
                         'Pretrained init_cfg.')
        else:
            lines.append(hint)
        raise CheckpointMismatchError('\n'.join(lines))
    return absent_optional


_LOAD_HINT = ('The checkpoint comes from another model or config (arch, num_classes, '
              'out_indices, ...): test and resume with the config it was trained with.')


def _check_incoming_state_dict(module: nn.Module, state_dict: Mapping[str, Tensor],
                               prefix: str, *args, optional_prefixes: Tuple[str, ...],
                               what: str) -> None:
    incoming = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    where = f' (keys under {prefix!r})' if prefix else ''
    check_state_dict_fits(expected, incoming, optional_prefixes, what=f'{what}{where}',
                          hint=_LOAD_HINT)


def require_fitting_state_dict(module: nn.Module, optional_prefixes: Iterable[str] = (),
                               what: Optional[str] = None) -> None:
    """Make every load of weights into ``module`` raise unless they fit it.

    A ``load_state_dict`` pre-hook: it runs whoever loads (``Module.load_state_dict`` with
    any ``strict``, mmengine's ``load_checkpoint`` / ``load_from`` / ``--resume``, the
    mmdet / mmseg / mmpretrain inferencers), sees the keys under the module's prefix and
    raises :class:`CheckpointMismatchError` naming every missing, unexpected or misshapen key
    (mmengine's loaders only warn about them, which leaves random weights behind). Register
    it after hooks that rename keys.

    Args:
        module: The module to guard.
        optional_prefixes: Module keys (or key prefixes) a checkpoint may lack: parts a
            model of the same family without them does not have; they keep their weights.
        what: Named in the message; the class name by default.
    """
    module._register_load_state_dict_pre_hook(
        functools.partial(_check_incoming_state_dict,
                          optional_prefixes=tuple(optional_prefixes),
                          what=what or type(module).__name__),
        with_module=True)


def require_fitting_checkpoints(model: nn.Module) -> nn.Module:
    """:func:`require_fitting_state_dict` for a whole model: the test tool and ``--resume``.

    Model wrappers (DDP) and test-time-augmentation models are looked through, as mmengine's
    checkpoint loader does.

    Returns:
        nn.Module: The model the check was put on.
    """
    from mmengine.model import BaseTTAModel, is_model_wrapper
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    require_fitting_state_dict(model, what=f'the {type(model).__name__} model')
    return model


def load_pretrained_into(module: nn.Module,
                         checkpoint: str,
                         prefix: Optional[str] = None,
                         optional_prefixes: Iterable[str] = (),
                         map_location: str = 'cpu') -> None:
    """Load ``checkpoint`` (a path or URL mmengine can open) into ``module``, strictly.

    Args:
        module: The model to fill.
        checkpoint: File to load.
        prefix: Keep only the keys under this prefix, with it removed (e.g. ``'backbone.'``).
        optional_prefixes: Module keys that may be absent from the checkpoint.
        map_location: Where tensors are loaded.
    """
    state = extract_state_dict(CheckpointLoader.load_checkpoint(checkpoint, map_location))
    if prefix:
        if not prefix.endswith('.'):
            prefix += '.'
        selected = OrderedDict((k[len(prefix):], v) for k, v in state.items()
                               if k.startswith(prefix))
        if not selected:
            raise CheckpointMismatchError(
                f'No key of {checkpoint} starts with prefix {prefix!r}; its keys start with '
                f'{_names({k.split(".")[0] + "." for k in state})}.')
        state = selected
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    absent = check_state_dict_fits(expected, state, optional_prefixes,
                                   what=f'{type(module).__name__} ({checkpoint})')
    module.load_state_dict(state, strict=False)
    print_log(f'Loaded {len(state)} tensors into {type(module).__name__} from {checkpoint}'
              + (f'; newly initialised: {_names(absent)}' if absent else ''), logger='current')


# --------------------------------------------------------------------------------------------
# The authors' released SECViT checkpoints -> mmpretrain ImageClassifier keys.
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
                f'Not a SECViT release state dict: it lacks {_names(absent)}.')
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
            + (f'\nKeys the converter does not know ({len(unknown)}): {_names(unknown)}'
               if unknown else '')
            + (f'\nRoPE tables that differ from the released formula: {_names(bad_rope)}'
               if bad_rope else ''))
    check_state_dict_fits(
        expected_secvit_classifier_keys(arch), converted,
        what=f'an SECViT classifier of arch {arch}')
    return converted, arch


def expected_secvit_classifier_keys(arch: dict) -> Dict[str, Tuple[int, ...]]:
    """Key -> shape of the mmpretrain SECViT classifier for an arch from
    :func:`infer_secvit_arch`."""
    from sec_mm.models.backbones.secvit import SECViT  # models import this module
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
