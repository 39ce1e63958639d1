import math

import pytest
import torch
import torch.nn.functional as F

from sec_mm.ops import (resolve_num_clusters, sec_attention, sec_cluster_sizes, sec_order)
from sec_mm.ops.reference import sec_attention_reference


def random_qkv(batch=2, heads=3, length=50, dim=8, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, length, dim, generator=gen, dtype=dtype) for _ in range(3)]


@pytest.mark.parametrize('length,num_clusters', [(48, 4), (50, 4), (37, 5), (64, 8), (7, 3)])
def test_matches_reference_num_clusters(length, num_clusters):
    q, k, v = random_qkv(length=length)
    out = sec_attention(q, k, v, num_clusters=num_clusters)
    ref = sec_attention_reference(q, k, v, num_clusters=num_clusters)
    assert out.shape == q.shape
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('length,cluster_size', [(48, 12), (50, 12), (37, 10), (10, 3)])
def test_matches_reference_cluster_size(length, cluster_size):
    q, k, v = random_qkv(length=length)
    out = sec_attention(q, k, v, cluster_size=cluster_size)
    ref = sec_attention_reference(q, k, v, num_clusters=math.ceil(length / cluster_size))
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_custom_scale_and_value_dim():
    q, k, _ = random_qkv(length=30)
    v = torch.randn(2, 3, 30, 5)
    out = sec_attention(q, k, v, num_clusters=3, scale=0.3)
    torch.testing.assert_close(
        out.double(), sec_attention_reference(q, k, v, num_clusters=3, scale=0.3),
        atol=1e-5, rtol=1e-5)
    assert out.shape == (2, 3, 30, 5)


@pytest.mark.parametrize('num_clusters', [1, 0, -1])
def test_one_cluster_is_global_attention(num_clusters):
    q, k, v = random_qkv(length=20)
    out = sec_attention(q, k, v, num_clusters=num_clusters)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))


def test_cluster_size_larger_than_sequence_is_global():
    q, k, v = random_qkv(length=20)
    torch.testing.assert_close(
        sec_attention(q, k, v, cluster_size=64), F.scaled_dot_product_attention(q, k, v))


def test_more_clusters_than_tokens_gives_one_token_each():
    q, k, v = random_qkv(length=5)
    # One token per cluster: every token attends only to itself, so the output is v.
    torch.testing.assert_close(sec_attention(q, k, v, num_clusters=64), v)


def test_clusters_are_independent_of_token_order():
    """Permuting the input tokens permutes the output the same way (no positional cut)."""
    q, k, v = random_qkv(length=40)
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(1))
    out = sec_attention(q, k, v, num_clusters=4)
    out_perm = sec_attention(q[:, :, perm], k[:, :, perm], v[:, :, perm], num_clusters=4)
    torch.testing.assert_close(out_perm, out[:, :, perm], atol=1e-6, rtol=1e-5)


def test_sort_is_stable_for_ties():
    keys = torch.ones(1, 2, 9, 4)  # all similarities equal
    assert torch.equal(sec_order(keys), torch.arange(9).expand(1, 2, 9))


def test_order_is_ascending_cosine_similarity():
    _, k, _ = random_qkv(length=25)
    order = sec_order(k)
    sim = F.cosine_similarity(k, k.mean(2, keepdim=True), dim=-1)
    sorted_sim = torch.gather(sim, 2, order)
    assert (sorted_sim[..., 1:] >= sorted_sim[..., :-1] - 1e-6).all()


def test_cluster_sizes_follow_tensor_split():
    for length, count in [(10, 3), (98, 32), (3136, 32), (7, 7)]:
        expected = [len(c) for c in torch.tensor_split(torch.arange(length), count)]
        assert sec_cluster_sizes(length, count) == expected


def test_gradients_match_finite_differences():
    q, k, v = (t.requires_grad_() for t in random_qkv(1, 2, 11, 4, dtype=torch.float64))
    assert torch.autograd.gradcheck(
        lambda q, k, v: sec_attention(q, k, v, num_clusters=3), (q, k, v))


def test_gradients_match_reference():
    q, k, v = (t.requires_grad_() for t in random_qkv(length=26, dtype=torch.float64))
    sec_attention(q, k, v, num_clusters=4).square().sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    sec_attention_reference(q2, k2, v2, num_clusters=4).square().sum().backward()
    for grad, ref in zip(grads, (q2.grad, k2.grad, v2.grad)):
        torch.testing.assert_close(grad, ref)


def test_needs_exactly_one_cluster_mode():
    q, k, v = random_qkv(length=8)
    with pytest.raises(ValueError, match='exactly one of `num_clusters`'):
        sec_attention(q, k, v)
    with pytest.raises(ValueError, match='exactly one of `num_clusters`'):
        sec_attention(q, k, v, num_clusters=2, cluster_size=4)
    with pytest.raises(ValueError, match='positive integer'):
        sec_attention(q, k, v, cluster_size=0)


def test_rejects_wrong_rank_and_mismatched_shapes():
    q, k, v = random_qkv(length=8)
    with pytest.raises(ValueError, match=r'\(B, heads, L, d\)'):
        sec_attention(q[0], k[0], v[0], num_clusters=2)
    with pytest.raises(ValueError, match='same shape'):
        sec_attention(q, k[:, :, :6], v, num_clusters=2)


def test_resolve_num_clusters():
    assert resolve_num_clusters(3136, num_clusters=32) == 32
    assert resolve_num_clusters(3136, cluster_size=98) == 32
    assert resolve_num_clusters(3137, cluster_size=98) == 33
    assert resolve_num_clusters(49, cluster_size=98) == 1
    assert resolve_num_clusters(5, num_clusters=8) == 5


# ----- primitives: stable sort, row gathers, layouts -----
from sec_mm.ops import dispatch, gather_tokens, restore_tokens  # noqa: E402


@pytest.mark.parametrize('values', [
    torch.randn(3, 4, 50),
    torch.randint(-3, 3, (2, 5, 40)).float(),  # many ties: stability decides
    # Above the size where CPU sorts switch to radix sort (no padding), with ties.
    torch.randint(-50, 50, (4, 3, 3000)).float(),
    torch.tensor([[0., -0., 1., -1., 0., float('inf'), -float('inf'), 1e-38, -1e-38, 3., -0.]]),
    torch.randn(1, 1, 1),
])
def test_key_sort_equals_stable_torch_sort(values):
    assert torch.equal(dispatch.stable_argsort(values),
                       torch.sort(values, dim=-1, stable=True).indices)


def test_sec_order_of_strided_keys_equals_contiguous():
    packed = torch.randn(2, 30, 3, 4, 8)  # (B, L, 3, heads, d) as a qkv projection lays it out
    keys = packed[:, :, 1].transpose(1, 2)
    assert not keys.is_contiguous()
    assert torch.equal(sec_order(keys), sec_order(keys.contiguous()))


def test_gather_tokens_takes_any_index_with_correct_gradients():
    packed = torch.randn(2, 12, 3, 2, 5, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([[0, 0, 11, 3, 3, 3], [5, 4, 3, 2, 1, 0]]).expand(2, 2, 6)

    def take(packed):  # from a strided (B, heads, L, d) view, as the layers pass keys
        return gather_tokens(packed[:, :, 1].transpose(1, 2), index)

    x = packed[:, :, 1].transpose(1, 2)
    torch.testing.assert_close(
        take(packed), torch.gather(x, 2, index.unsqueeze(-1).expand(-1, -1, -1, 5)))
    # Repeated tokens receive the sum of their gradients, left-out ones none.
    assert torch.autograd.gradcheck(take, (packed, ))


def test_gather_and_restore_on_strided_views():
    packed = torch.randn(2, 20, 3, 2, 4, dtype=torch.float64)
    v = packed[:, :, 2].transpose(1, 2).requires_grad_()  # (B, heads, L, d), token-major
    v.retain_grad()
    order = torch.stack([torch.randperm(20) for _ in range(4)]).view(2, 2, 20)
    gathered = gather_tokens(v, order)
    torch.testing.assert_close(
        gathered, torch.gather(v, 2, order.unsqueeze(-1).expand(-1, -1, -1, 4)))
    restored = restore_tokens(gathered, order)
    torch.testing.assert_close(restored, v)
    # sec_attention's callers merge heads with a free view: the restore is token-major.
    assert restored.transpose(1, 2).is_contiguous()
    assert torch.autograd.gradcheck(lambda t: restore_tokens(gather_tokens(t, order), order),
                                    (v.detach().clone().requires_grad_(), ))


def test_token_major_inputs_give_the_reference_result():
    """q, k, v as strided views of one (B, L, 3, heads, d) qkv tensor, as SECAttention passes."""
    packed = torch.randn(2, 50, 3, 3, 8)
    q, k, v = (t.transpose(1, 2) for t in packed.unbind(2))
    out = sec_attention(q, k, v, num_clusters=4)
    torch.testing.assert_close(out.double(),
                               sec_attention_reference(q, k, v, num_clusters=4),
                               atol=1e-5, rtol=1e-5)


# ----- mixed precision -----
def test_order_under_autocast_equals_the_float32_order(cpu_autocast_dtype):
    # Keys of a real layer's scale: under autocast a half-precision `keys @ center` would
    # tie and swap many neighbours and move tokens across cluster borders.
    keys = torch.randn(2, 4, 3136, 32, generator=torch.Generator().manual_seed(0))
    expected = sec_order(keys)
    dtype = cpu_autocast_dtype
    with torch.autocast('cpu', dtype=dtype):
        assert torch.equal(sec_order(keys), expected)
    # Half-precision keys are upcast: their order is the float32 order of the same values.
    assert torch.equal(sec_order(keys.to(dtype)), sec_order(keys.to(dtype).float()))


def test_permute_tokens_gradient_is_the_inverse_permutation():
    from sec_mm.ops import inverse_permutation, permute_tokens
    x = torch.randn(2, 3, 17, 4, dtype=torch.float64, requires_grad=True)
    order = torch.stack([torch.randperm(17) for _ in range(6)]).view(2, 3, 17)
    expected = torch.gather(x, 2, order.unsqueeze(-1).expand(-1, -1, -1, 4))
    torch.testing.assert_close(permute_tokens(x, order), expected)
    inverse = inverse_permutation(order)
    assert torch.equal(torch.gather(order, 2, inverse), torch.arange(17).expand(2, 3, 17))
    torch.testing.assert_close(permute_tokens(x, order, inverse), expected)
    assert torch.autograd.gradcheck(lambda t: permute_tokens(t, order), (x, ))
