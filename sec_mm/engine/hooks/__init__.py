from .atomic_checkpoint_hook import AtomicCheckpointHook
from .exact_resume_hook import ExactResumeHook
from .nonfinite_guard_hook import NonFiniteError, NonFiniteGuardHook
from .preemption_hook import PREEMPTED_EXIT_CODE, PreemptionHook

__all__ = ['AtomicCheckpointHook', 'ExactResumeHook', 'NonFiniteError', 'NonFiniteGuardHook',
           'PREEMPTED_EXIT_CODE', 'PreemptionHook']
