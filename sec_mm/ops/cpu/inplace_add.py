"""``fresh + other`` written into ``fresh``'s memory.

Every new large tensor costs page faults on CPU; adding into a tensor that was just produced
and that nothing else refers to (a conv output, whose backward does not need it) saves one
allocation of a feature map.

Measured against ``fresh + other`` (benchmarks/results.md, "Dispatch kernels"; torch 2.14,
2 threads, glibc's allocator, medians of 8 interleaved runs): SECViT-T inference at batch 8,
224x224, 472 vs. 508 ms (1.08x); training steps are even (0.99x), as is the addition alone.
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
