import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sec_mm.models import SECConnector


def randomise(connector, seed=0):
    """Random weights everywhere, so attention is far from uniform and groups matter."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in connector.parameters():
            param.normal_(0, 0.5)
    return connector


def reference_connector(connector, x):
    """The connector written directly: sort, group, mean-query attention per head, project."""
    batch, length, channels = x.shape
    groups_out, heads = connector.num_tokens, connector.num_heads
    dims = channels // heads
    q, k, v = connector.q_proj(x), connector.k_proj(x), connector.v_proj(x)
    merged = torch.zeros(batch, groups_out, channels)
    for b in range(batch):
        sim = F.cosine_similarity(k[b], k[b].mean(0, keepdim=True), dim=-1)
        order = sorted(range(length), key=lambda i: (sim[i].item(), i))
        if connector.merge == 'interleaved':
            groups = [order[n::groups_out] for n in range(groups_out)]
        else:
            groups = [c.tolist() for c in torch.tensor_split(torch.tensor(order), groups_out)]
        for n, members in enumerate(groups):
            for h in range(heads):
                part = slice(h * dims, (h + 1) * dims)
                query = q[b, members, part].mean(0)
                weights = torch.softmax(k[b, members, part] @ query * dims**-0.5, dim=0)
                merged[b, n, part] = weights @ v[b, members, part]
    return connector.projector(connector.out_proj(merged))


@pytest.mark.parametrize('merge', ['interleaved', 'sequential'])
@pytest.mark.parametrize('num_tokens,num_groups', [(64, 16), (50, 12), (576, 144)])
def test_matches_reference(merge, num_tokens, num_groups):
    connector = randomise(SECConnector(32, 48, num_groups, num_heads=4, merge=merge))
    x = torch.randn(2, num_tokens, 32)
    out = connector(x)
    assert out.shape == (2, num_groups, 48)
    with torch.no_grad():
        # Large random weights: float32 rounding of the two summation orders reaches ~1e-5.
        torch.testing.assert_close(out, reference_connector(connector, x), atol=1e-4, rtol=1e-4)


def test_sequential_differs_from_interleaved():
    inter = randomise(SECConnector(32, 48, 8, num_heads=4))
    seq = SECConnector(32, 48, 8, num_heads=4, merge='sequential')
    seq.load_state_dict(inter.state_dict())
    x = torch.randn(2, 40, 32)
    assert (inter(x) - seq(x)).abs().max() > 1e-2


def test_group_index_follows_the_layout():
    connector = randomise(SECConnector(16, 16, 5, num_heads=2))
    x = torch.randn(3, 23, 16)
    groups = connector.group_index(x)
    assert groups.shape == (3, 23)
    for b in range(3):
        sizes = torch.bincount(groups[b], minlength=5)
        assert sizes.tolist() == [5, 5, 5, 4, 4]  # 23 = 3 * 5 + 2 * 4: nothing dropped
        keys = connector.k_proj(x[b])
        sim = F.cosine_similarity(keys, keys.mean(0, keepdim=True), dim=-1)
        order = torch.argsort(sim, stable=True)
        # Interleaved: the token at sorted rank r belongs to group r % G.
        assert groups[b, order].tolist() == [r % 5 for r in range(23)]


def test_class_token_is_kept_as_is():
    with_cls = randomise(SECConnector(32, 48, 6, num_heads=4, with_cls_token=True))
    without = SECConnector(32, 48, 6, num_heads=4)
    without.load_state_dict(with_cls.state_dict())
    x = torch.randn(2, 1 + 30, 32)
    out = with_cls(x)
    assert out.shape == (2, 1 + 6, 48)
    assert with_cls.num_output_tokens() == 7
    with torch.no_grad():
        torch.testing.assert_close(out[:, 0], with_cls.projector(x[:, 0]))
        torch.testing.assert_close(out[:, 1:], without(x[:, 1:]))
        # The class token takes no part in the order or the merge.
        changed = x.clone()
        changed[:, 0] += 5
        torch.testing.assert_close(with_cls(changed)[:, 1:], out[:, 1:])


def test_initialisation_averages_each_group():
    """Fresh connector: identity values/output, small q/k -> about the mean of every group."""
    connector = SECConnector(16, 16, 4, num_heads=2, proj_depth=0)
    x = torch.randn(1, 20, 16)
    groups = connector.group_index(x)[0]
    expected = torch.stack([x[0, groups == n].mean(0) for n in range(4)])
    with torch.no_grad():
        torch.testing.assert_close(connector(x)[0], expected, atol=2e-2, rtol=0)


def test_every_token_gets_gradient_and_all_parameters_train():
    connector = randomise(SECConnector(16, 24, 7, num_heads=2))
    x = torch.randn(2, 45, 16, requires_grad=True)
    connector(x).square().sum().backward()
    assert (x.grad.abs().sum(-1) > 0).all()
    for name, param in connector.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize('depth', [1, 2, 3])
def test_loads_a_stock_llava_projector(depth):
    """mmpretrain's LLaVA projector weights load into the connector's MLP."""
    if depth == 1:
        stock = nn.Linear(16, 24)
    else:
        layers = [nn.Linear(16, 24)]
        for _ in range(1, depth):
            layers += [nn.GELU(), nn.Linear(24, 24)]
        stock = nn.Sequential(*layers)
    connector = SECConnector(16, 24, 4, num_heads=2, proj_depth=depth)
    result = connector.load_state_dict(stock.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert sorted(result.missing_keys) == sorted(
        f'{name}.{p}' for name in ('q_proj', 'k_proj', 'v_proj', 'out_proj')
        for p in ('weight', 'bias'))
    x = torch.randn(3, 16)
    with torch.no_grad():
        torch.testing.assert_close(connector.projector(x), stock(x))


def test_registered_in_mmpretrain():
    from mmpretrain.registry import MODELS
    connector = MODELS.build(dict(type='SECConnector', in_channels=16, out_channels=8,
                                  num_tokens=3, num_heads=2, proj_depth=1))
    assert isinstance(connector, SECConnector)
    assert connector(torch.randn(1, 10, 16)).shape == (1, 3, 8)


def test_bad_input_raises_clear_errors():
    connector = SECConnector(16, 8, 4, num_heads=2)
    with pytest.raises(ValueError, match=r'\(B, N, C\)'):
        connector(torch.randn(1, 16, 4, 4))
    with pytest.raises(ValueError, match=r'\(B, N, C\)'):
        connector(torch.randn(10, 16))
    with pytest.raises(ValueError, match='in_channels'):
        connector(torch.randn(1, 10, 12))
    with pytest.raises(ValueError, match='num_tokens <= 3'):
        connector(torch.randn(1, 3, 16))
    cls_connector = SECConnector(16, 8, 4, num_heads=2, with_cls_token=True)
    with pytest.raises(ValueError, match='after the class token'):
        cls_connector(torch.randn(1, 4, 16))
    with pytest.raises(ValueError, match='divisible by num_heads'):
        SECConnector(16, 8, 4, num_heads=3)
    with pytest.raises(ValueError, match='merge'):
        SECConnector(16, 8, 4, num_heads=2, merge='neighbours')
    with pytest.raises(ValueError, match='num_tokens'):
        SECConnector(16, 8, 0, num_heads=2)
    with pytest.raises(ValueError, match='proj_depth=0'):
        SECConnector(16, 8, 4, num_heads=2, proj_depth=0)
    with pytest.raises(ValueError, match='proj_depth'):
        SECConnector(16, 8, 4, num_heads=2, proj_depth=-1)
