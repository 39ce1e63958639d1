"""Strict loading of stock (mmpretrain / mmdet / mmseg) checkpoints into their SEC variants."""
from collections import OrderedDict
from typing import Callable, Dict, Iterable, Optional

from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor, nn

from sec_mm.utils.checkpoint import (CheckpointMismatchError, check_state_dict_fits,
                                     extract_state_dict)

StateDict = Dict[str, Tensor]


def load_stock_checkpoint(module: nn.Module,
                          pretrained: dict,
                          adapt: Optional[Callable[[StateDict], StateDict]] = None,
                          optional_keys: Iterable[str] = ()) -> None:
    """Load a ``Pretrained`` init_cfg's checkpoint into ``module``, raising on misfit keys.

    mmengine's ``PretrainedInit`` only warns when keys do not fit, which could leave a silently
    random backbone; this raises :class:`~sec_mm.utils.CheckpointMismatchError` instead.

    Args:
        module (nn.Module): The SEC backbone.
        pretrained (dict): ``dict(type='Pretrained', checkpoint=..., prefix=...)``.
        adapt (callable, optional): Maps the (prefix-stripped) checkpoint to the module's key
            layout, e.g. drops window-attention keys; may log what it drops.
        optional_keys (Iterable[str]): Module keys (or key prefixes) that may be absent from
            the checkpoint: parts the stock model does not have. They keep their fresh
            initialisation and are listed in the log.
    """
    checkpoint, prefix = pretrained['checkpoint'], pretrained.get('prefix')
    state = extract_state_dict(CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu'))
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        selected = OrderedDict((k[len(prefix):], v) for k, v in state.items()
                               if k.startswith(prefix))
        if not selected:
            starts = sorted({k.split('.')[0] + '.' for k in state})
            raise CheckpointMismatchError(
                f'No key of {checkpoint} starts with prefix {prefix!r}; its keys start with '
                f'{", ".join(starts[:20])}. Fix the `prefix` of the Pretrained init_cfg.')
        state = selected
    if adapt is not None:
        state = adapt(state)
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    absent = check_state_dict_fits(expected, state, optional_keys,
                                   what=f'{type(module).__name__} ({checkpoint})')
    module.load_state_dict(state, strict=False)
    print_log(f'Loaded {len(state)} tensors into {type(module).__name__} from {checkpoint}'
              + (f'; newly initialised ({len(absent)}): {", ".join(absent)}' if absent else ''),
              logger='current')
