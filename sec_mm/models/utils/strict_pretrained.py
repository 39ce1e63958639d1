"""Strict loading of ``Pretrained`` checkpoints into the SEC backbones."""
from typing import Dict, Sequence

from torch import Tensor

from sec_mm.checkpoint import load_pretrained_into, pop_pretrained_cfg

__all__ = ['StrictPretrainedMixin']


class StrictPretrainedMixin:
    """Mixin of the SEC backbones, placed before the ``BaseModule`` (or stock backbone) base.

    ``init_weights`` takes the ``Pretrained`` entry off ``init_cfg``, initialises the rest as
    the parent does (with ``default_init_cfg``, when the backbone has one and nothing else is
    left), then loads the checkpoint with
    :func:`~sec_mm.checkpoint.load_pretrained_into`: mmengine's ``PretrainedInit`` only
    warns about keys that do not fit, which would leave a silently random backbone. The keys
    go through :meth:`adapt_checkpoint` (e.g. a stock Swin's onto SEC-Swin's); the parts the
    source model lacks (:meth:`new_parts`) keep their fresh initialisation and are logged.

    ``train`` returns the module, as ``model.train()`` does in torch (mmpretrain's backbones
    return None).
    """

    def adapt_checkpoint(self, state: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Map a checkpoint's (prefix-stripped) keys onto this backbone's."""
        return state

    def new_parts(self) -> Sequence[str]:
        """Keys (or key prefixes) of this backbone that the checkpoint may lack."""
        return ()

    def init_weights(self) -> None:
        init_cfg = self.init_cfg
        pretrained, self.init_cfg = pop_pretrained_cfg(init_cfg)
        if not self.init_cfg:
            # Without it the parent would skip its own initialisation of the rest.
            self.init_cfg = getattr(self, 'default_init_cfg', None)
        super().init_weights()
        self.init_cfg = init_cfg
        if pretrained is not None:
            load_pretrained_into(self, pretrained['checkpoint'], prefix=pretrained.get('prefix'),
                                 adapt=self.adapt_checkpoint, optional_prefixes=self.new_parts())

    def train(self, mode: bool = True):
        super().train(mode)
        return self
