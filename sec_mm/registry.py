"""The one place that registers sec_mm's classes into the OpenMMLab registries.

Every model goes into the ``MODELS`` registry of each of mmpretrain, mmdet and mmseg that is
installed, under the same name, so configs of any of the three can say ``type='SECViT'``.
Engine parts (an optimizer wrapper, a checkpoint hook, a file backend) go into mmengine's
registries, which the three codebases' registries inherit from.
"""
import importlib
from typing import List

from mmengine.fileio import register_backend
from mmengine.fileio.backends.registry_utils import backends as FILE_BACKENDS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import Registry

from . import models
from .engine import (ATOMIC_BACKEND, AtomicCheckpointHook, AtomicLocalBackend, CPUAmpOptimWrapper,
                     ExactResumeHook, NonFiniteGuardHook, PreemptionHook)
from .utils import CODEBASES


def installed_model_registries() -> List[Registry]:
    """The ``MODELS`` registries of the installed codebases."""
    registries = []
    for codebase in CODEBASES:
        try:
            registries.append(importlib.import_module(f'{codebase}.registry').MODELS)
        except ImportError:
            continue
    return registries


def _register(registry: Registry, cls: type, name: str) -> None:
    existing = registry.module_dict.get(name)
    if existing is cls:
        return
    if existing is not None:
        raise KeyError(f'{registry.scope}.{registry.name} already has a different {name!r} '
                       f'({existing.__module__}); sec_mm cannot register its own.')
    registry.register_module(name=name, module=cls)


def register_all_modules() -> None:
    """Register every sec_mm model; idempotent."""
    shared = {name: getattr(models, name)
              for name in ('SECViT', 'SECAttention', 'SECViTBlock')}
    for registry in installed_model_registries():
        for name, cls in shared.items():
            _register(registry, cls, name)
        # SEC variants of mmpretrain's Swin and ViT subclass them, SEC-FasterViT uses
        # SECMultiheadAttention: present with mmpretrain.
        for name in ('SECSwinTransformer', 'SECVisionTransformer', 'SECFasterViT',
                     'SECMultiheadAttention'):
            if hasattr(models, name):
                _register(registry, getattr(models, name), name)
        if registry.scope == 'mmpretrain':
            _register(registry, models.SECViTClsHead, 'SECViTClsHead')
            _register(registry, models.SECConnector, 'SECConnector')
            if hasattr(models, 'SECLlava'):  # needs transformers
                _register(registry, models.SECLlava, 'SECLlava')
    # Norm layers are built through mmengine's root registry from any scope; mmpretrain has
    # its own 'LN2d', mmdet and mmseg do not.
    if 'LN2d' not in MMENGINE_MODELS.module_dict:
        _register(MMENGINE_MODELS, models.LayerNorm2d, 'LN2d')
    # `--amp` on a machine without an accelerator (the codebases' registries inherit it).
    _register(MMENGINE_OPTIM_WRAPPERS, CPUAmpOptimWrapper, 'CPUAmpOptimWrapper')
    # Atomic checkpoint writes (tools/train.py uses the hook in place of CheckpointHook).
    _register(MMENGINE_HOOKS, AtomicCheckpointHook, 'AtomicCheckpointHook')
    # A run that is stopped by NaN, resumed exactly, saved on preemption (tools/train.py adds
    # them; configs for the stock tools list them in custom_hooks).
    for hook in (NonFiniteGuardHook, ExactResumeHook, PreemptionHook):
        _register(MMENGINE_HOOKS, hook, hook.__name__)
    if FILE_BACKENDS.get(ATOMIC_BACKEND) is not AtomicLocalBackend:
        register_backend(ATOMIC_BACKEND, AtomicLocalBackend)
