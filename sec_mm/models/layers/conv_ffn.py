"""The SECViT feed-forward network: 1x1 convs around a GELU and a residual depthwise conv."""
import torch.nn as nn
from torch import Tensor

from sec_mm.ops import dispatch
from .memory_format import channels_last_conv_weights


class ConvFFN(nn.Module):
    """``fc2(h + dwconv(h))`` with ``h = GELU(fc1(x))``, all on ``(B, C, H, W)`` maps.

    Args:
        embed_dims (int): Input and output channels ``C``.
        feedforward_channels (int): Hidden channels (``3 * C`` in SECViT).
    """

    def __init__(self, embed_dims: int, feedforward_channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(embed_dims, feedforward_channels, 1)
        self.act = nn.GELU()
        self.dwconv = nn.Conv2d(
            feedforward_channels, feedforward_channels, 3, padding=1,
            groups=feedforward_channels)
        self.fc2 = nn.Conv2d(feedforward_channels, embed_dims, 1)
        channels_last_conv_weights(self)  # SECViT's maps are channels-last

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.act(self.fc1(x))
        # In place into the depthwise conv's fresh output (its backward does not need it):
        # saves one 3C-channel allocation, the largest tensors of a block.
        hidden = dispatch.add_into_fresh(self.dwconv(hidden), hidden)
        return self.fc2(hidden)
