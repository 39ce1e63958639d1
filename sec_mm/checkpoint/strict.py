"""Strict checkpoint loading: weights that do not fit a model stop the load, naming the file,
the keys and the fix, instead of leaving randomly initialised parts behind.

The conversion of the authors' released SECViT weights lives in :mod:`sec_mm.converters`.
"""
import copy
import functools
from collections import OrderedDict
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from .loading import load_checkpoint

__all__ = [
    'CheckpointMismatchError', 'pop_pretrained_cfg', 'load_pretrained_into',
    'extract_state_dict', 'check_state_dict_fits', 'format_keys', 'require_fitting_state_dict',
    'require_fitting_checkpoints'
]

StateDict = Dict[str, Tensor]


class CheckpointMismatchError(ValueError):
    """A checkpoint whose keys or shapes do not fit the model it is loaded into."""


def format_keys(keys: Iterable[str], limit: int = 20) -> str:
    """``keys`` sorted and comma-separated for an error message, the first ``limit`` of them
    and how many more."""
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
                f'are {format_keys(checkpoint)}. Drop --ema to use the plain weights.')
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
                f'state dict? Top-level keys: {format_keys(checkpoint)}.')
        out[key[len('module.'):] if key.startswith('module.') else key] = value
    return out


def _looks_released(keys: Iterable[str]) -> bool:
    # The top-level names of the authors' SECViT release (sec_mm.converters.secvit_release
    # maps them); only recognised here, to point at the converter.
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
            lines.append(f'Missing keys ({len(missing)}): {format_keys(missing)}')
        if unexpected:
            lines.append(f'Unexpected keys ({len(unexpected)}): {format_keys(unexpected)}')
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
                         adapt: Optional[Callable[[StateDict], StateDict]] = None,
                         optional_prefixes: Iterable[str] = (),
                         map_location: str = 'cpu') -> None:
    """Load ``checkpoint`` into ``module``, raising unless every key fits: the one strict
    loader of the SEC models' ``init_cfg=dict(type='Pretrained', ...)``.

    mmengine's ``PretrainedInit`` only warns when keys do not fit, which could leave a silently
    random backbone; this raises :class:`CheckpointMismatchError` naming the file, every
    missing, unexpected or misshapen key, and the fix.

    Args:
        module (nn.Module): The model to fill.
        checkpoint (str): A path or URL (any scheme of mmengine's), loaded weights-only
            (:func:`~sec_mm.checkpoint.load_checkpoint`): an OpenMMLab checkpoint
            (``state_dict``), a converted SECViT release (``model`` / ``model_ema``) or a bare
            state dict.
        prefix (str, optional): Keep only the keys under this prefix, with it removed (e.g.
            ``'backbone.'`` for a backbone inside a whole-model checkpoint).
        adapt (callable, optional): Maps the (prefix-stripped) state dict to the module's key
            layout before the check, e.g. drops the window-attention keys a stock Swin
            checkpoint has and SEC attention does not use; it may log what it drops.
        optional_prefixes (Iterable[str]): Module keys (or key prefixes) the checkpoint may
            lack: parts the source model does not have. They keep their fresh initialisation
            and are listed in the log.
        map_location (str): Where tensors are loaded. Defaults to ``'cpu'``.

    Raises:
        CheckpointMismatchError: No key under ``prefix``, or keys that do not fit.
    """
    state = extract_state_dict(load_checkpoint(checkpoint, map_location))
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        selected = OrderedDict((k[len(prefix):], v) for k, v in state.items()
                               if k.startswith(prefix))
        if not selected:
            raise CheckpointMismatchError(
                f'No key of {checkpoint} starts with prefix {prefix!r}; its keys start with '
                f'{format_keys({k.split(".")[0] + "." for k in state})}. Fix the `prefix` of the '
                'Pretrained init_cfg.')
        state = selected
    if adapt is not None:
        state = adapt(state)
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    absent = check_state_dict_fits(expected, state, optional_prefixes,
                                   what=f'{type(module).__name__} ({checkpoint})')
    module.load_state_dict(state, strict=False)
    # Every fresh key is listed: a reader must be able to tell what was not pretrained.
    print_log(f'Loaded {len(state)} tensors into {type(module).__name__} from {checkpoint}'
              + (f'; newly initialised ({len(absent)}): {", ".join(absent)}' if absent else ''),
              logger='current')
