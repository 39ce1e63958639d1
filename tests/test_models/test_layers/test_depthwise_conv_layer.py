import pytest
import torch
import torch.nn as nn

from sec_mm.models.layers import DepthwiseConv2d


def test_same_parameters_values_and_gradients_as_a_depthwise_nn_conv2d():
    torch.manual_seed(0)
    conv = DepthwiseConv2d(6, 5)
    stock = nn.Conv2d(6, 6, 5, padding=2, groups=6)
    # A checkpoint of one loads into the other.
    stock.load_state_dict(conv.state_dict())
    assert isinstance(conv, nn.Conv2d) and conv.padding == (2, 2) and conv.groups == 6
    x = torch.randn(2, 6, 7, 9).contiguous(memory_format=torch.channels_last)
    out, expected = conv(x), stock(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    expected.backward(grad_out)
    torch.testing.assert_close(conv.weight.grad, stock.weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv.bias.grad, stock.bias.grad, rtol=1e-5, atol=1e-5)


def test_even_kernel_is_refused():
    with pytest.raises(ValueError, match='odd kernel size'):
        DepthwiseConv2d(4, 4)
