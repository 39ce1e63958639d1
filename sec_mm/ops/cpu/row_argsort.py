"""Stable row-wise argsort of float32 values as one radix sort of integer keys.

PyTorch's CPU sort sorts a flat int64 tensor of at least 32768 elements (``at::internal``'s
grain size) by radix sort, and rows of floats by a comparison sort per row. Every row of the
values becomes one block of keys ``(row << 32) | order-preserving value bits``, so a single
flat stable sort orders all rows at once; a short input is padded up to the radix size with
keys above all others, which costs less than the comparison sort.

Measured against ``torch.sort(stable=True)`` (benchmarks/results.md, "Dispatch kernels"; torch
2.14, 2 threads, medians of 21 interleaved runs): the similarities of SECViT-T's stages at
batch 8, ``(8, 2, 3136)`` 0.77 vs. 1.57 ms (2.0x), ``(8, 4, 784)`` 0.58 vs. 1.27 ms (2.2x),
``(8, 8, 196)`` even (minimums 0.37 vs. 0.47 ms).
"""
import torch
from torch import Tensor

__all__ = ['supports', 'stable_argsort']

# Smallest flat int64 tensor that the CPU sort sorts by radix sort.
RADIX_MIN_KEYS = 32768


def supports(values: Tensor) -> bool:
    """Float32 CPU values with few enough rows that ``row << 32`` fits in 63 bits."""
    rows = values.numel() // max(values.shape[-1], 1) if values.dim() else 1
    return (values.device.type == 'cpu' and values.dtype == torch.float32
            and values.dim() >= 1 and max(rows, 1).bit_length() + 32 <= 63)


def stable_argsort(values: Tensor) -> Tensor:
    """``torch.sort(values, dim=-1, stable=True).indices``.

    Args:
        values (Tensor): ``(..., L)`` float32 on the CPU.

    Returns:
        Tensor: ``(..., L)`` int64.
    """
    length = values.shape[-1]
    rows = values.numel() // max(length, 1)
    # Float bits -> unsigned integers in the same order: negative values have all bits
    # flipped, non-negative ones only the sign bit (-0.0 is made +0.0 first so they tie).
    bits = (values.reshape(rows, length) + 0.).view(torch.int32)
    bits = (bits ^ ((bits >> 31) | -2**31)).to(torch.int64) & 0xFFFFFFFF
    row = torch.arange(rows, device=values.device).unsqueeze(1)
    keys = ((row << 32) | bits).flatten()
    if keys.numel() < RADIX_MIN_KEYS:
        keys = torch.cat([keys, keys.new_full((RADIX_MIN_KEYS - keys.numel(), ), rows << 32)])
    flat = torch.sort(keys, stable=True).indices[:rows * length]
    return (flat.view(rows, length) - row * length).view(values.shape)
