"""The run around the model (OpenMMLab's ``engine``): launch and distributed set-up, process
lifetime, peer watchdog, resume, atomic checkpoints, data audit, the CPU AMP wrapper and hooks
(atomic checkpoints, non-finite guard, exact resume, preemption).

The models never import this package; the tools and the registry do.
"""
from .atomic_backend import ATOMIC_BACKEND, AtomicLocalBackend, write_atomic
from .hooks import (AtomicCheckpointHook, ExactResumeHook, NonFiniteError, NonFiniteGuardHook,
                    PreemptionHook)
from .optim import CPUAmpOptimWrapper

__all__ = ['ATOMIC_BACKEND', 'AtomicLocalBackend', 'write_atomic', 'AtomicCheckpointHook',
           'ExactResumeHook', 'NonFiniteError', 'NonFiniteGuardHook', 'PreemptionHook',
           'CPUAmpOptimWrapper']
