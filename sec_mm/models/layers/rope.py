"""2-D rotary position embedding (RoPE) as used by the SECViT release."""
from typing import Tuple

import torch
import torch.nn as nn
from torch import Tensor

from sec_mm.ops import apply_rope, rotate_pairs

__all__ = ['rotate_pairs', 'apply_rope', 'RotaryEmbedding2d']


class RotaryEmbedding2d(nn.Module):
    """Sines and cosines of a 2-D rotary embedding for an ``h x w`` token grid.

    The first half of the head dimension rotates with the row index, the second half with the
    column index; each consecutive pair of channels shares one frequency.

    Args:
        head_dims (int): Channels per head ``d``; must be a multiple of 4.
        base (float): Frequency base. Defaults to 10000.
    """

    def __init__(self, head_dims: int, base: float = 10000.) -> None:
        super().__init__()
        if head_dims % 4 != 0:
            raise ValueError(
                f'2-D RoPE needs a head dimension divisible by 4, got {head_dims}; choose '
                '`embed_dims` and `num_heads` so that embed_dims // num_heads % 4 == 0, or '
                'turn RoPE off (use_rope=False).')
        self.head_dims = head_dims
        angle = 1. / base**torch.linspace(0, 1, head_dims // 4)
        # [a0, a0, a1, a1, ...]: both members of a rotated pair share a frequency. Derived
        # from head_dims alone, so it is not saved in checkpoints.
        self.register_buffer(
            'angle', angle.repeat_interleave(2), persistent=False)

    def forward(self, height: int, width: int) -> Tuple[Tensor, Tensor]:
        """Return ``(sin, cos)``, each ``(height * width, head_dims)`` in row-major order."""
        angle = self.angle.float()
        rows = torch.arange(height, device=angle.device, dtype=angle.dtype)
        cols = torch.arange(width, device=angle.device, dtype=angle.dtype)
        row_angle = (rows[:, None] * angle).unsqueeze(1).expand(height, width, -1)
        col_angle = (cols[:, None] * angle).unsqueeze(0).expand(height, width, -1)
        grid = torch.cat([row_angle, col_angle], dim=-1).reshape(height * width, -1)
        return grid.sin(), grid.cos()
