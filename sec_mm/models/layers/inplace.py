"""In-place residual additions that change nothing but the number of allocations."""
import torch
from torch import Tensor


def add_into(fresh: Tensor, other: Tensor) -> Tensor:
    """``fresh + other``, written into ``fresh`` when that gives the identical result.

    For large CPU feature maps every new tensor costs page faults, so adding into a tensor
    that was just produced (e.g. a conv output, whose backward does not need it) saves time.
    Falls back to ``fresh + other`` when writing in place would change the result's dtype
    (e.g. a bfloat16 conv output plus a float32 residual under autocast) or shape.

    Args:
        fresh (Tensor): A tensor nothing else refers to, such as a conv's output.
        other (Tensor): The tensor to add.
    """
    if fresh.dtype == torch.promote_types(fresh.dtype, other.dtype) and \
            fresh.shape == other.shape:
        return fresh.add_(other)
    return fresh + other
