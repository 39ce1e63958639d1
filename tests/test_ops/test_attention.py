import pytest
import torch
import torch.nn.functional as F

from sec_mm.ops import dispatch
from sec_mm.ops.cpu import short_attention

attention = dispatch.attention


def _takes_kernel(q, k, v):
    return dispatch.uses_kernel('attention') and short_attention.supports(q, k, v)


def _qkv(*shape, length_k=None, dtype=torch.float32):
    length_k = shape[-2] if length_k is None else length_k
    q = torch.randn(*shape, dtype=dtype)
    k = torch.randn(*shape[:-2], length_k, shape[-1], dtype=dtype)
    v = torch.randn(*shape[:-2], length_k, shape[-1] + 3, dtype=dtype)
    return q, k, v


@pytest.mark.parametrize('length', [7, 100, short_attention.MAX_LENGTH])
def test_explicit_path_equals_sdpa_values_and_gradients(length):
    # 130 sequences of 100 tokens span three chunks of score matrices.
    q, k, v = _qkv(2, 65, length, 16)
    assert _takes_kernel(q, k, v)
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    reference = [t.clone().requires_grad_() for t in (q, k, v)]
    out = attention(*inputs, scale=0.3)
    expected = F.scaled_dot_product_attention(*reference, scale=0.3)
    torch.testing.assert_close(out, expected, atol=2e-6, rtol=1e-5)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, inputs, grad_out)
    expected_grads = torch.autograd.grad(expected, reference, grad_out)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, atol=1e-5, rtol=1e-5)
    # The forced plain path is the same op as the reference.
    with dispatch.plain_ops('attention'):
        assert not _takes_kernel(q, k, v)
        plain = attention(*reference, scale=0.3)
    assert plain.grad_fn.name() == expected.grad_fn.name()
    torch.testing.assert_close(plain, expected, atol=0, rtol=0)


def test_explicit_path_gradients_match_finite_differences():
    q, k, v = (t.requires_grad_() for t in _qkv(3, 5, 4, dtype=torch.float64))
    assert torch.autograd.gradcheck(attention, (q, k, v))


def test_queries_and_keys_of_different_lengths_and_default_scale():
    q, k, v = _qkv(2, 3, 5, 8, length_k=11)
    torch.testing.assert_close(attention(q, k, v),
                               F.scaled_dot_product_attention(q, k, v))


def test_long_sequences_half_precision_and_tracing_use_sdpa():
    long = _qkv(1, 2, short_attention.MAX_LENGTH + 1, 8)
    assert not _takes_kernel(*long)
    torch.testing.assert_close(attention(*long),
                               F.scaled_dot_product_attention(*long))
    half = [t.bfloat16() for t in _qkv(1, 2, 9, 8)]
    assert not _takes_kernel(*half)
    traced = torch.jit.trace(attention, _qkv(1, 2, 9, 8))
    assert 'scaled_dot_product_attention' in str(traced.graph)
