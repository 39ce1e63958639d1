"""The few torch APIs sec_mm uses that are newer than torch 2.1, with their older spellings.

sec_mm supports torch 2.1 to 2.14: many OpenMMLab users stay on torch 2.1, the last version
with prebuilt mmcv 2.1.0 CUDA wheels. Call these instead of the torch functions themselves.

Pure PyTorch on purpose: nothing here knows about mmengine, mmdet, mmseg or mmpretrain.
"""
import importlib

import torch

__all__ = ['is_compiling', 'is_exporting', 'is_autocast_enabled', 'get_autocast_dtype']


def is_compiling() -> bool:
    """Whether ``torch.compile`` (dynamo) is tracing the caller.

    ``torch.compiler.is_compiling`` exists from torch 2.3; torch 2.1-2.2 have
    ``torch._dynamo.is_compiling``.
    """
    compiler = getattr(torch, 'compiler', None)
    if compiler is not None and hasattr(compiler, 'is_compiling'):
        return compiler.is_compiling()
    try:
        dynamo = importlib.import_module('torch._dynamo')
    except ImportError:
        return False
    return bool(getattr(dynamo, 'is_compiling', lambda: False)())


def is_exporting() -> bool:
    """Whether the caller is being exported: ``torch.onnx.export`` (either exporter) or
    ``torch.export``.

    ``torch.onnx.is_in_onnx_export`` covers both ONNX exporters; ``torch.compiler.is_exporting``
    (absent from older torch) covers ``torch.export`` itself. A plain ``torch.jit.trace``
    (e.g. FLOP counting) is not an export.
    """
    if torch.onnx.is_in_onnx_export():
        return True
    compiler = getattr(torch, 'compiler', None)
    return bool(getattr(compiler, 'is_exporting', lambda: False)())


def is_autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (``'cpu'``, ``'cuda'``, ...).

    ``torch.is_autocast_enabled(device_type)`` exists from torch 2.4; before, CPU autocast had
    its own ``torch.is_autocast_cpu_enabled()`` and the argument-less call meant CUDA.
    """
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:
        if device_type == 'cpu':
            return torch.is_autocast_cpu_enabled()
        if device_type == 'cuda':
            return torch.is_autocast_enabled()
        return False


def get_autocast_dtype(device_type: str) -> torch.dtype:
    """The dtype autocast casts to on ``device_type`` (torch 2.4+ spelling, with fallbacks)."""
    getter = getattr(torch, 'get_autocast_dtype', None)
    if getter is not None:
        return getter(device_type)
    if device_type == 'cpu':
        return torch.get_autocast_cpu_dtype()
    return torch.get_autocast_gpu_dtype()
