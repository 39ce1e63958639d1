"""Mixed-precision training on CPU, for ``--amp`` on machines without an accelerator."""
from contextlib import contextmanager
from typing import Union

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper


class CPUAmpOptimWrapper(OptimWrapper):
    """``OptimWrapper`` that runs forward and loss under CPU autocast (bfloat16 by default).

    mmengine's ``AmpOptimWrapper`` only runs on GPU/NPU/MLU/MUSA. bfloat16 has float32's
    exponent range, so unlike float16 it needs no loss scaling and this wrapper has none.

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
        with super().optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield
