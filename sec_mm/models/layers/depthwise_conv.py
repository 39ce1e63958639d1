"""A depthwise ``nn.Conv2d`` that keeps the size of its input."""
import torch.nn as nn

from .memory_format import channels_last_conv_weights


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2,
    groups=channels)`` with channels-last weights (its inputs are channels-last): the same
    parameters, state dict and values as the stock conv.

    Args:
        channels (int): Input and output channels ``C``.
        kernel_size (int): An odd kernel size; the output keeps the input's ``H x W``.

    Shape:
        - x: ``(B, C, H, W)``
        - output: ``(B, C, H, W)``
    """

    def __init__(self, channels: int, kernel_size: int) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f'DepthwiseConv2d needs an odd kernel size, got {kernel_size}.')
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2,
                         groups=channels)
        channels_last_conv_weights(self)
