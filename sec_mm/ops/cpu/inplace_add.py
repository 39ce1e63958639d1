"""``fresh + other`` written into ``fresh``'s memory.

Every new large tensor costs page faults on CPU; adding into a tensor that was just produced
and that nothing else refers to (a conv output, whose backward does not need it) saves one
allocation of a feature map.

Measured (benchmarks/results.md, "Dispatch kernels"): the residual additions of a SECViT-T
stage 1 block (64 and 192 channels at 56x56, batch 8), forward and backward, 2 threads.
"""
import torch
from torch import Tensor

__all__ = ['supports', 'add_into_fresh']


def supports(fresh: Tensor, other: Tensor) -> bool:
    """CPU tensors of one shape whose sum has ``fresh``'s dtype (under autocast a bfloat16
    conv output plus a float32 residual does not)."""
    return (fresh.device.type == 'cpu' and fresh.shape == other.shape
            and fresh.dtype == torch.promote_types(fresh.dtype, other.dtype))


def add_into_fresh(fresh: Tensor, other: Tensor) -> Tensor:
    """``fresh.add_(other)``."""
    return fresh.add_(other)
