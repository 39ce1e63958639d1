"""Let ``torch.load``'s weights-only mode read mmengine checkpoints.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True`` and refuses mmengine's own
checkpoints, so ``--resume``, ``load_from``, ``tools/test.py`` and the inferencers fail. The
message hub in a checkpoint pickles ``HistoryBuffer`` objects, numpy arrays, and bound methods
through ``builtins.getattr``; allowing ``getattr`` would re-open arbitrary code execution, so
instead checkpoints written by processes that imported sec_mm pickle a ``HistoryBuffer`` by its
data only (a ``copyreg`` reducer), and exactly the classes that then remain are registered as
safe (narrower than ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, which turns the protection off).
``import sec_mm`` calls :func:`register_checkpoint_safe_globals`, so a config's
``custom_imports`` is enough for the stock tools.
"""
import argparse
import copyreg
import importlib
from typing import List

import numpy as np

from .compat import add_safe_globals

__all__ = ['checkpoint_safe_globals', 'register_checkpoint_safe_globals']


def checkpoint_safe_globals() -> List[object]:
    """The non-tensor classes and functions inside mmengine Runner checkpoints, and the
    ``argparse.Namespace`` of the training options that DeiT-style releases (the authors'
    SECViT files) store beside the weights. None of them runs code when unpickled."""
    from mmengine.logging import HistoryBuffer
    found = [HistoryBuffer, argparse.Namespace, np.ndarray, np.dtype]
    # numpy's pickle helpers moved from numpy.core to numpy._core in numpy 2.
    for module_name in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found += [getattr(module, name) for name in ('_reconstruct', 'scalar')
                  if hasattr(module, name)]
    # Arrays are pickled with their dtype's class (numpy.dtypes.Float64DType, ...).
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        found += [cls for cls in vars(dtypes).values()
                  if isinstance(cls, type) and issubclass(cls, np.dtype)]
    return found


def _reduce_history_buffer(buffer):
    # The data only: no numpy arrays and no bound methods (which pickle via getattr); the
    # default statistics methods are set again by __init__.
    return type(buffer), (buffer._log_history.tolist(), buffer._count_history.tolist(),
                          buffer.max_length)


def register_checkpoint_safe_globals() -> None:
    """Let ``torch.load(weights_only=True)`` read mmengine checkpoints; idempotent.

    Pickles ``HistoryBuffer`` by value from now on (see the module docstring) and registers
    the remaining checkpoint classes as safe.
    """
    from mmengine.logging import HistoryBuffer
    copyreg.pickle(HistoryBuffer, _reduce_history_buffer)
    add_safe_globals(checkpoint_safe_globals())
