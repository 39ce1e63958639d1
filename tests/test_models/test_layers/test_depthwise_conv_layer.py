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


def _assert_close_sums(actual, expected):
    """Gradients are sums of many products: compare them at float32 rounding of their
    scale, whatever the summation order."""
    torch.testing.assert_close(actual, expected, rtol=1e-5,
                               atol=1e-6 * float(expected.abs().max()))


# Odd and even sides, images smaller than the kernel, one pixel; 5x5 (LCE) and 3x3 kernels.
@pytest.mark.parametrize('shape', [(2, 8, 9, 7), (3, 4, 1, 1), (2, 6, 2, 3), (4, 16, 14, 14)])
@pytest.mark.parametrize('kernel', [5, 3])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_values_and_all_gradients_equal_the_functional_conv(shape, kernel, dtype):
    torch.manual_seed(0)
    conv = DepthwiseConv2d(shape[1], kernel).to(dtype)
    x = torch.randn(*shape, dtype=dtype).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    out = conv(x)
    leaves = [t.detach().clone().requires_grad_() for t in (x, conv.weight, conv.bias)]
    expected = nn.functional.conv2d(*leaves, padding=kernel // 2, groups=shape[1])
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (x, conv.weight, conv.bias), grad_out)
    for grad, expected_grad in zip(grads, torch.autograd.grad(expected, leaves, grad_out)):
        _assert_close_sums(grad, expected_grad)
    # The input gradient keeps the input's channels-last layout.
    assert grads[0].is_contiguous(memory_format=torch.channels_last)
