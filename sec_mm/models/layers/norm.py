"""Channel LayerNorm for feature maps in NCHW layout."""
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of every pixel of a ``(B, C, H, W)`` map.

    Args:
        num_channels (int): ``C``.
        eps (float): Added to the variance. Defaults to 1e-6 (the SECViT release).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, **kwargs) -> None:
        super().__init__(num_channels, eps=eps, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f'LayerNorm2d expects (B, C, H, W), got shape {tuple(x.shape)}.')
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)
