"""``frozen_stages`` and ``norm_eval``, as OpenMMLab backbones have them."""
from typing import List

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ['FrozenStagesMixin']


class FrozenStagesMixin:
    """Mixin of backbones with ``frozen_stages`` and ``norm_eval`` attributes.

    The subclass lists in :meth:`frozen_modules` what its ``frozen_stages`` covers.
    :meth:`freeze_stages` puts those in eval mode without gradients; ``train`` does it again
    after every switch of mode (the runner switches between training and validation), and with
    ``norm_eval`` keeps every BatchNorm in eval mode so that its running statistics stay those
    of the pretrained weights.
    """

    def frozen_modules(self) -> List[nn.Module]:
        """The modules that ``frozen_stages`` freezes."""
        raise NotImplementedError

    def freeze_stages(self) -> None:
        for module in self.frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self.freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self
