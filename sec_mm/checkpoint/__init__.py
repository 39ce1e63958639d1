"""Checkpoint loading: one weights-only, strict path for models, engine, converters and tools.

- :mod:`.integrity`: whether a file is a complete PyTorch checkpoint (read without unpickling).
- :mod:`.safe_globals`: what weights-only loading must allow for mmengine's own files.
- :mod:`.loading`: :func:`load_checkpoint`, weights-only from a path or any mmengine scheme,
  and the same loader behind mmengine's ``CheckpointLoader``.
- :mod:`.strict`: weights that do not fit a model stop the load, naming the keys and the fix.
"""
from .integrity import checkpoint_problem
from .loading import (SCHEMES, CheckpointFileError, UnsafeCheckpointError, download_checkpoint,
                      load_checkpoint, secure_checkpoint_loaders)
from .safe_globals import checkpoint_safe_globals, register_checkpoint_safe_globals
from .strict import (CheckpointMismatchError, check_state_dict_fits, extract_state_dict,
                     format_keys, load_pretrained_into, pop_pretrained_cfg,
                     require_fitting_checkpoints, require_fitting_state_dict)

__all__ = [
    'checkpoint_problem', 'SCHEMES', 'CheckpointFileError', 'UnsafeCheckpointError',
    'download_checkpoint', 'load_checkpoint', 'secure_checkpoint_loaders',
    'checkpoint_safe_globals', 'register_checkpoint_safe_globals', 'secure_checkpoint_loading',
    'CheckpointMismatchError', 'check_state_dict_fits', 'extract_state_dict', 'format_keys',
    'load_pretrained_into', 'pop_pretrained_cfg', 'require_fitting_checkpoints',
    'require_fitting_state_dict'
]


def secure_checkpoint_loading() -> None:
    """Make every checkpoint load of this process weights-only and checked (idempotent):
    mmengine's own checkpoints become readable weights-only, and every scheme of mmengine's
    ``CheckpointLoader`` goes through :func:`load_checkpoint`. ``import sec_mm`` calls it."""
    register_checkpoint_safe_globals()
    secure_checkpoint_loaders()
