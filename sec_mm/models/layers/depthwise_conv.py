"""A depthwise ``nn.Conv2d`` with the faster CPU weight gradient of :mod:`sec_mm.ops`."""
import torch.nn as nn
from torch import Tensor

from sec_mm.ops import dispatch
from .memory_format import channels_last_conv_weights


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2,
    groups=channels)``: same parameters, state dict and values, but its forward runs
    :func:`sec_mm.ops.dispatch.depthwise_conv2d`, which has a faster CPU kernel for the 5x5
    weight gradient.

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
        channels_last_conv_weights(self)  # its inputs are channels-last

    def forward(self, x: Tensor) -> Tensor:
        return dispatch.depthwise_conv2d(x, self.weight, self.bias, self.padding[0])
