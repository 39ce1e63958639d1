import pytest
import torch
import torch.nn.functional as F

from sec_mm.ops import dispatch
from sec_mm.ops.cpu import depthwise_conv5x5

depthwise_conv2d = dispatch.depthwise_conv2d


def _assert_close_sums(actual, expected):
    """Gradients are sums of many products: compare them at float32 rounding of their
    scale, whatever the summation order."""
    torch.testing.assert_close(actual, expected, rtol=1e-5,
                               atol=1e-6 * float(expected.abs().max()))


def _inputs(batch, channels, height, width, kernel=5, channels_last=True):
    torch.manual_seed(0)
    x = torch.randn(batch, channels, height, width)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randn(channels, 1, kernel, kernel), torch.randn(channels)


def _grads(fn, x, weight, bias, grad_out=None):
    """Output and gradients of ``fn`` w.r.t. every input that has ``requires_grad``."""
    inputs = [t for t in (x, weight, bias) if t is not None and t.requires_grad]
    out = fn(x, weight, bias)
    grad_out = torch.randn_like(out) if grad_out is None else grad_out
    return out, grad_out, torch.autograd.grad(out, inputs, grad_out)


# Odd and even sides, images smaller than the kernel, one pixel.
@pytest.mark.parametrize('shape', [(2, 8, 9, 7), (3, 4, 1, 1), (2, 6, 2, 3), (4, 16, 14, 14)])
@pytest.mark.parametrize('with_bias', [True, False])
def test_5x5_weight_gradient_from_3x3_ones_equals_stock(shape, with_bias):
    x, weight, bias = _inputs(*shape)
    bias = bias if with_bias else None
    assert depthwise_conv5x5.supports(x.requires_grad_(), weight, 2)
    ours = [t.detach().clone().requires_grad_() if t is not None else None
            for t in (x, weight, bias)]
    out, grad_out, grads = _grads(lambda *a: depthwise_conv2d(*a, padding=2), *ours)
    assert out.grad_fn.name().startswith('_DepthwiseConv5x5')

    stock = [t.detach().clone().requires_grad_() if t is not None else None
             for t in (x, weight, bias)]
    expected, _, expected_grads = _grads(
        lambda x, w, b: F.conv2d(x, w, b, padding=2, groups=shape[1]), *stock, grad_out)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    for grad, expected_grad in zip(grads, expected_grads):
        _assert_close_sums(grad, expected_grad)
    # The input gradient keeps the input's channels-last layout.
    assert grads[0].is_contiguous(memory_format=torch.channels_last)
    # The forced plain path is the stock convolution.
    with dispatch.plain_ops('depthwise_conv2d'):
        plain = depthwise_conv2d(*ours, padding=2)
    assert not plain.grad_fn.name().startswith('_DepthwiseConv5x5')
    torch.testing.assert_close(plain, expected, rtol=0, atol=0)


def test_only_the_requested_gradients_are_computed():
    x, weight, bias = _inputs(2, 4, 6, 6)
    weight.requires_grad_()
    out = depthwise_conv2d(x, weight, bias, padding=2)
    grad_weight, = torch.autograd.grad(out, [weight], torch.ones_like(out))
    expected, = torch.autograd.grad(
        F.conv2d(x, weight, bias, padding=2, groups=4), [weight], torch.ones_like(out))
    _assert_close_sums(grad_weight, expected)


@pytest.mark.parametrize('case', ['3x3', 'nchw', 'float64', 'no_grad', 'autocast', 'padding'])
def test_other_cases_run_the_stock_convolution(case):
    x, weight, bias = _inputs(2, 4, 6, 6, kernel=3 if case == '3x3' else 5,
                              channels_last=case != 'nchw')
    if case == 'float64':
        x, weight, bias = x.double(), weight.double(), bias.double()
    padding = 1 if case in ('3x3', 'padding') else 2
    if case != 'no_grad':
        x.requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=case == 'autocast'):
        assert not depthwise_conv5x5.supports(x, weight, padding)
        out = depthwise_conv2d(x, weight, bias, padding=padding)
        expected = F.conv2d(x, weight, bias, padding=padding, groups=4)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    if x.requires_grad:
        assert not out.grad_fn.name().startswith('_DepthwiseConv5x5')


def test_wrong_weight_shape_is_refused():
    x, weight, _ = _inputs(2, 4, 6, 6)
    with pytest.raises(ValueError, match=r'\(C, 1, k, k\) weight'):
        depthwise_conv2d(x, weight[:3], padding=2)
    with pytest.raises(ValueError, match=r'\(C, 1, k, k\) weight'):
        depthwise_conv2d(x, torch.randn(4, 2, 5, 5), padding=2)
