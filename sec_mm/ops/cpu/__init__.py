"""CPU kernels behind :mod:`sec_mm.ops.dispatch`, one per file.

Each module has ``supports(...)``, whether its kernel applies to the given tensors, and the
kernel itself, which returns what the plain PyTorch op returns (values up to float rounding,
the same gradients). Call them through :mod:`sec_mm.ops.dispatch`, which also keeps them away
from tracers, compilers and exporters.

Pure PyTorch on purpose: nothing here knows about mmengine, mmdet, mmseg or mmpretrain.
"""
