"""Mixed-precision training on CPU, for ``--amp`` on machines without an accelerator."""
from contextlib import contextmanager
from typing import Any, Union

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper


def _to_float32(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (tuple, list)):
        return type(value)(_to_float32(v) for v in value)
    return value


class CPUAmpOptimWrapper(OptimWrapper):
    """``OptimWrapper`` that trains the backbone under CPU autocast (bfloat16 by default).

    mmengine's ``AmpOptimWrapper`` only runs on GPU/NPU/MLU/MUSA. On CPU, the backbone (where
    the attention and most FLOPs are) runs under ``torch.autocast('cpu')`` and hands float32
    features to the rest of the model: mmcv's CPU ops (NMS, RoIAlign, ...) have no bfloat16
    kernels. A model without a ``backbone`` runs under autocast whole. bfloat16 has float32's
    exponent range, so unlike float16 it needs no loss scaling, and this wrapper has none.

    Args:
        dtype (str | torch.dtype): Autocast type, ``'bfloat16'`` (default) or ``'float16'``.
        **kwargs: :class:`mmengine.optim.OptimWrapper` arguments.
    """

    def __init__(self, dtype: Union[str, torch.dtype] = 'bfloat16', **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(dtype, str):
            if dtype not in ('bfloat16', 'float16'):
                raise ValueError(f'CPU autocast takes dtype bfloat16 or float16, got {dtype!r}.')
            dtype = getattr(torch, dtype)
        self.cast_dtype = dtype

    @contextmanager
    def optim_context(self, model: nn.Module):
        backbone = getattr(getattr(model, 'module', model), 'backbone', None)
        with super().optim_context(model):
            if backbone is None:
                with torch.autocast('cpu', dtype=self.cast_dtype):
                    yield
                return
            forward = backbone.forward

            def autocast_forward(*args, **kwargs):
                with torch.autocast('cpu', dtype=self.cast_dtype):
                    return _to_float32(forward(*args, **kwargs))

            backbone.forward = autocast_forward
            try:
                yield
            finally:
                del backbone.forward  # back to the class's forward
