"""SEC attention on CUDA against the float64 CPU definition, in float32, float16, bfloat16."""
import pytest
import torch

from sec_mm.ops import sec_attention, sec_order
from sec_mm.ops.reference import sec_attention_reference

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason='no CUDA GPU visible (torch.cuda.is_available() is False)')

# Largest deviations from the float64 result: float32 rounding; 10 / 8 mantissa bits.
TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 6e-2}
CASES = [
    (196, dict(num_clusters=4)),  # divisible: 4 x 49 (SECViT's stage-3 cluster count)
    (197, dict(num_clusters=4)),  # not divisible: clusters of 50, 49, 49, 49
    (300, dict(cluster_size=64)),  # cluster-size mode: 5 clusters of 60
]


def _inputs(length, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, length, 32, generator=generator).to('cuda', dtype)
            for _ in range(3)]


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16],
                         ids=['fp32', 'fp16', 'bf16'])
@pytest.mark.parametrize('length,clusters', CASES, ids=['divisible', 'uneven', 'size'])
def test_values_and_gradients_match_the_float64_reference(length, clusters, dtype):
    q, k, v = (t.requires_grad_() for t in _inputs(length, dtype))
    out = sec_attention(q, k, v, **clusters)
    assert out.dtype == dtype and out.device.type == 'cuda'
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)

    ref_inputs = [t.detach().cpu().double().requires_grad_() for t in (q, k, v)]
    expected = sec_attention_reference(*ref_inputs, **clusters)
    expected_grads = torch.autograd.grad(expected, ref_inputs, grad_out.cpu().double())

    tol = TOLERANCE[dtype]
    torch.testing.assert_close(out.cpu().double(), expected, atol=tol, rtol=tol)
    for name, grad, expected_grad in zip('qkv', grads, expected_grads):
        assert torch.isfinite(grad).all(), name
        torch.testing.assert_close(grad.cpu().double(), expected_grad, atol=4 * tol,
                                   rtol=4 * tol, msg=lambda m: f'grad of {name}: {m}')


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=['fp16', 'bf16'])
def test_order_under_autocast_equals_the_float32_order(dtype):
    keys = torch.randn(2, 4, 3136, 32, generator=torch.Generator().manual_seed(0)).cuda()
    expected = sec_order(keys)
    with torch.autocast('cuda', dtype=dtype):
        assert torch.equal(sec_order(keys), expected)
    # And the same order as on the CPU.
    assert torch.equal(expected.cpu(), sec_order(keys.cpu()))
