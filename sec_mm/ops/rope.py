"""Rotary position embedding (RoPE) applied to queries or keys.

Pure PyTorch on purpose: nothing here knows about mmengine, mmdet, mmseg or mmpretrain.
"""
import torch
from torch import Tensor

__all__ = ['rotate_pairs', 'apply_rope']


def rotate_pairs(x: Tensor) -> Tensor:
    """Map each consecutive pair ``(x0, x1)`` of the last axis to ``(-x1, x0)``."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def apply_rope(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """Rotate ``x`` of shape ``(..., L, d)`` by the angles behind ``sin``/``cos`` ``(L, d)``."""
    return x * cos + rotate_pairs(x) * sin
