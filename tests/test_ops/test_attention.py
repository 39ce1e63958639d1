import pytest
import torch
import torch.nn.functional as F

from sec_mm.ops import attention as attention_module
from sec_mm.ops import dot_product_attention


def _qkv(*shape, length_k=None, dtype=torch.float32):
    length_k = shape[-2] if length_k is None else length_k
    q = torch.randn(*shape, dtype=dtype)
    k = torch.randn(*shape[:-2], length_k, shape[-1], dtype=dtype)
    v = torch.randn(*shape[:-2], length_k, shape[-1] + 3, dtype=dtype)
    return q, k, v


@pytest.mark.parametrize('length', [7, 100, attention_module.EXPLICIT_MAX_LENGTH])
def test_explicit_path_equals_sdpa_values_and_gradients(length):
    # 130 sequences of 100 tokens span three chunks of score matrices.
    q, k, v = _qkv(2, 65, length, 16)
    assert attention_module._use_explicit(q, k, v)
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    reference = [t.clone().requires_grad_() for t in (q, k, v)]
    out = dot_product_attention(*inputs, scale=0.3)
    expected = F.scaled_dot_product_attention(*reference, scale=0.3)
    torch.testing.assert_close(out, expected, atol=2e-6, rtol=1e-5)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, inputs, grad_out)
    expected_grads = torch.autograd.grad(expected, reference, grad_out)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, atol=1e-5, rtol=1e-5)


def test_explicit_path_gradients_match_finite_differences():
    q, k, v = (t.requires_grad_() for t in _qkv(3, 5, 4, dtype=torch.float64))
    assert torch.autograd.gradcheck(dot_product_attention, (q, k, v))


def test_queries_and_keys_of_different_lengths_and_default_scale():
    q, k, v = _qkv(2, 3, 5, 8, length_k=11)
    torch.testing.assert_close(dot_product_attention(q, k, v),
                               F.scaled_dot_product_attention(q, k, v))


def test_long_sequences_half_precision_and_tracing_use_sdpa():
    long = _qkv(1, 2, attention_module.EXPLICIT_MAX_LENGTH + 1, 8)
    assert not attention_module._use_explicit(*long)
    torch.testing.assert_close(dot_product_attention(*long),
                               F.scaled_dot_product_attention(*long))
    half = [t.bfloat16() for t in _qkv(1, 2, 9, 8)]
    assert not attention_module._use_explicit(*half)
    traced = torch.jit.trace(dot_product_attention, _qkv(1, 2, 9, 8))
    assert 'scaled_dot_product_attention' in str(traced.graph)
