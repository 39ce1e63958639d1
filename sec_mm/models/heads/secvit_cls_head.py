"""The classification head of the SECViT release, as an mmpretrain head."""
from typing import Optional, Tuple

import torch.nn as nn
from mmpretrain.models.heads import ClsHead
from torch import Tensor


class SECViTClsHead(ClsHead):
    """1x1 conv projection, BatchNorm, Swish, global average pooling, linear classifier.

    Args:
        num_classes (int): Number of classes.
        in_channels (int): Channels of the last backbone stage.
        hidden_channels (int): Channels of the projection. Defaults to 1024.
        init_cfg (dict, optional): Defaults to truncated normal (std 0.02) convs and linears.
        **kwargs: ``loss``, ``topk``, ``cal_acc`` of :class:`mmpretrain.models.ClsHead`.

    Shape:
        - feats: a tuple whose last item is ``(B, in_channels, H, W)``.
        - output: ``(B, num_classes)`` logits.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 hidden_channels: int = 1024,
                 init_cfg: Optional[dict] = dict(
                     type='TruncNormal', layer=['Conv2d', 'Linear'], std=.02, bias=0.),
                 **kwargs) -> None:
        super().__init__(init_cfg=init_cfg, **kwargs)
        if num_classes <= 0:
            raise ValueError(f'num_classes must be positive, got {num_classes}.')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.proj = nn.Conv2d(in_channels, hidden_channels, 1)
        self.norm = nn.BatchNorm2d(hidden_channels)
        self.act = nn.SiLU()
        self.fc = nn.Linear(hidden_channels, num_classes)

    def pre_logits(self, feats: Tuple[Tensor, ...]) -> Tensor:
        """Pooled ``(B, hidden_channels)`` features of the last stage."""
        x = feats[-1]
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'SECViTClsHead expects a (B, {self.in_channels}, H, W) feature '
                             f'map, got {tuple(x.shape)}.')
        return self.act(self.norm(self.proj(x))).mean(dim=(2, 3))

    def forward(self, feats: Tuple[Tensor, ...]) -> Tensor:
        return self.fc(self.pre_logits(feats))
