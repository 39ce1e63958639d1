"""Conv weights stored channels-last, like the feature maps the SEC layers compute on."""
import torch
import torch.nn as nn

__all__ = ['channels_last_conv_weights']


def channels_last_conv_weights(module: nn.Module) -> nn.Module:
    """Store the weight of every ``nn.Conv2d`` in ``module`` channels-last (in place).

    A convolution of a channels-last input returns its weight gradient channels-last (oneDNN
    on CPU, cuDNN on GPU). With the weight stored the same way, the gradient has the
    parameter's strides: autograd keeps it as it is, and DDP finds it laid out like its bucket
    (otherwise it warns "Grad strides do not match bucket view strides" and copies it
    through a strided view every step). Values, state dicts and checkpoints are unchanged.

    Returns:
        nn.Module: ``module``.
    """
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d):
            conv.to(memory_format=torch.channels_last)
    return module
