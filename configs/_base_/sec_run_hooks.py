# The run hooks of sec_mm (sec_mm/engine/hooks, docs/reliability.md), here so that the
# codebases' own tools get them too (tools/train.py adds them to any config): stop at the first
# non-finite loss or gradient norm and never save or load non-finite weights; on SIGTERM or
# SIGUSR1 finish the iteration, save it and exit with 75; keep every rank's random-number
# states in each checkpoint so that a resumed run repeats the uninterrupted one.
custom_hooks = [
    dict(type='NonFiniteGuardHook'),
    dict(type='ExactResumeHook'),
    dict(type='PreemptionHook'),
]
