"""Checkpoint loading: one weights-only, strict path for models, engine, converters and tools.

- :mod:`.integrity`: whether a file is a complete checkpoint (read without unpickling).
- :mod:`.safe_globals`: what ``torch.load(weights_only=True)`` must allow for mmengine files.
- :mod:`.strict`: weights that do not fit a model stop the load, naming the keys and the fix.
"""
from .integrity import checkpoint_problem
from .safe_globals import checkpoint_safe_globals, register_checkpoint_safe_globals
from .strict import (CheckpointMismatchError, check_state_dict_fits, extract_state_dict,
                     format_keys, load_pretrained_into, pop_pretrained_cfg,
                     require_fitting_checkpoints, require_fitting_state_dict)

__all__ = [
    'checkpoint_problem', 'checkpoint_safe_globals', 'register_checkpoint_safe_globals',
    'CheckpointMismatchError', 'check_state_dict_fits', 'extract_state_dict', 'format_keys',
    'load_pretrained_into', 'pop_pretrained_cfg', 'require_fitting_checkpoints',
    'require_fitting_state_dict'
]
