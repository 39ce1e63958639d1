import pytest
import torch
import torch.nn.functional as F

from sec_mm.ops import sec_merge_attention, sec_merge_groups


def reference_merge(q, k, v, num_groups, merge):
    """Loops over images, groups and heads, straight from the paper's equations 5 and 6."""
    batch, heads, length, dims = q.shape
    out = torch.zeros(batch, heads, num_groups, v.shape[-1], dtype=q.dtype)
    for b in range(batch):
        keys = k[b].transpose(0, 1).reshape(length, -1)  # all heads together
        sim = F.cosine_similarity(keys, keys.mean(0, keepdim=True), dim=-1)
        order = sorted(range(length), key=lambda i: (sim[i].item(), i))
        if merge == 'interleaved':
            groups = [order[n::num_groups] for n in range(num_groups)]
        else:
            groups = [c.tolist() for c in torch.tensor_split(torch.tensor(order), num_groups)]
        for n, members in enumerate(groups):
            for h in range(heads):
                query = q[b, h, members].mean(0)
                weights = torch.softmax(k[b, h, members] @ query * dims**-0.5, dim=0)
                out[b, h, n] = weights @ v[b, h, members]
    return out


@pytest.mark.parametrize('merge', ['interleaved', 'sequential'])
@pytest.mark.parametrize('num_tokens,num_groups', [(12, 4), (10, 4), (7, 7), (9, 1), (50, 12)])
def test_groups_cover_every_token_once(merge, num_tokens, num_groups):
    index, valid = sec_merge_groups(num_tokens, num_groups, merge)
    assert index.shape == valid.shape == (num_groups, -(-num_tokens // num_groups))
    assert sorted(index[valid].tolist()) == list(range(num_tokens))
    sizes = valid.sum(1)
    assert sizes.max() - sizes.min() <= 1
    if merge == 'interleaved':
        for n in range(num_groups):
            assert index[n][valid[n]].tolist() == list(range(n, num_tokens, num_groups))
    else:
        expected = [c.tolist() for c in torch.tensor_split(torch.arange(num_tokens), num_groups)]
        assert [index[n][valid[n]].tolist() for n in range(num_groups)] == expected


@pytest.mark.parametrize('merge', ['interleaved', 'sequential'])
@pytest.mark.parametrize('num_tokens,num_groups', [(16, 4), (23, 5), (64, 10)])
def test_merge_attention_matches_reference(merge, num_tokens, num_groups):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, num_tokens, 8) for _ in range(3))
    out = sec_merge_attention(q, k, v, num_groups, merge=merge)
    assert out.shape == (2, 3, num_groups, 8)
    torch.testing.assert_close(out, reference_merge(q, k, v, num_groups, merge))


def test_interleaved_and_sequential_differ():
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, 24, 8) for _ in range(3))
    inter = sec_merge_attention(q, k, v, 6, merge='interleaved')
    seq = sec_merge_attention(q, k, v, 6, merge='sequential')
    assert (inter - seq).abs().max() > 1e-2


def test_explicit_order_and_full_merge():
    torch.manual_seed(2)
    q, k, v = (torch.randn(2, 2, 6, 4) for _ in range(3))
    # One group per token: each output is exactly its token's value, in the given order.
    order = torch.stack([torch.randperm(6) for _ in range(2)]).unsqueeze(1)
    out = sec_merge_attention(q, k, v, 6, order=order)
    expected = torch.gather(v, 2, order.expand(2, 2, 6).unsqueeze(-1).expand(-1, -1, -1, 4))
    torch.testing.assert_close(out, expected)


def test_every_token_reaches_the_output():
    """No token is dropped when G does not divide N."""
    torch.manual_seed(3)
    v = torch.randn(1, 2, 11, 4, requires_grad=True)
    q, k = torch.randn(1, 2, 11, 4), torch.randn(1, 2, 11, 4)
    sec_merge_attention(q, k, v, 3).sum().backward()
    assert (v.grad.abs().sum(-1) > 0).all()


def test_bad_input_raises():
    x = torch.randn(1, 2, 8, 4)
    with pytest.raises(ValueError, match='between 1 and the number of tokens'):
        sec_merge_attention(x, x, x, 9)
    with pytest.raises(ValueError, match='between 1 and the number of tokens'):
        sec_merge_groups(8, 0)
    with pytest.raises(ValueError, match='merge'):
        sec_merge_groups(8, 2, merge='random')
    with pytest.raises(ValueError, match=r'\(B, heads, N, d\)'):
        sec_merge_attention(x[0], x[0], x[0], 2)
    with pytest.raises(ValueError, match='same shape'):
        sec_merge_attention(x, x[..., :2], x, 2)
    with pytest.raises(ValueError, match='order'):
        sec_merge_attention(x, x, x, 2, order=torch.zeros(1, 2, 7, dtype=torch.long))
