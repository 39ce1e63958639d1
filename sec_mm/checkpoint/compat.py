"""Weights-only loading's list of allowed classes, on every torch sec_mm supports (2.1+)."""
import functools
from typing import Dict, Iterable

import torch

__all__ = ['add_safe_globals']

_added: Dict[str, object] = {}


def _name(obj: object) -> str:
    return f'{obj.__module__}.{obj.__qualname__}'


def add_safe_globals(objects: Iterable[object]) -> None:
    """Allow ``objects`` (classes, functions) in ``torch.load(weights_only=True)``.

    torch 2.4 and newer keep that list (``torch.serialization.add_safe_globals``). Older torch
    has a fixed list (``torch._weights_only_unpickler._get_allowed_globals``), extended here
    by wrapping it; its unpickler builds only tensors and dicts, so there an allowed class
    loads when it is pickled through a reducer (``HistoryBuffer`` is) but not by attribute
    state (numpy arrays, ``argparse.Namespace`` are refused with torch's message).
    """
    objects = list(objects)
    serialization = torch.serialization
    if hasattr(serialization, 'add_safe_globals'):
        registered = set(map(id, serialization.get_safe_globals()))
        new = [obj for obj in objects if id(obj) not in registered]
        if new:
            serialization.add_safe_globals(new)
        return
    from torch import _weights_only_unpickler as unpickler
    if not _added:
        stock = unpickler._get_allowed_globals

        @functools.wraps(stock)
        def allowed_globals():
            return {**stock(), **_added}

        unpickler._get_allowed_globals = allowed_globals
    _added.update({_name(obj): obj for obj in objects})
