import pytest
import torch

from sec_mm.models.layers import SECAttention


def test_output_shape_and_modes():
    x = torch.randn(2, 32, 7, 9)
    for kwargs in [dict(num_clusters=4), dict(cluster_size=10), dict(num_clusters=-1),
                   dict(num_clusters=3, use_rope=False, use_lce=False)]:
        layer = SECAttention(32, 4, **kwargs)
        assert layer(x).shape == x.shape


def test_cluster_size_mode_equals_count_mode_when_divisible():
    torch.manual_seed(0)
    by_count = SECAttention(32, 4, num_clusters=8).eval()
    by_size = SECAttention(32, 4, cluster_size=8)
    by_size.load_state_dict(by_count.state_dict())
    x = torch.randn(2, 32, 8, 8)
    torch.testing.assert_close(by_count(x), by_size(x))


def test_lce_switch_changes_the_output_and_parameters():
    with_lce = SECAttention(16, 2, num_clusters=2)
    without = SECAttention(16, 2, num_clusters=2, use_lce=False)
    assert 'lce.weight' in with_lce.state_dict() and 'lce.weight' not in without.state_dict()


def test_precomputed_rope_equals_internal_rope():
    layer = SECAttention(32, 4, num_clusters=2)
    x = torch.randn(1, 32, 6, 5)
    torch.testing.assert_close(layer(x), layer(x, layer.rope(6, 5)))


def test_errors():
    layer = SECAttention(32, 4, num_clusters=2)
    with pytest.raises(ValueError, match=r'\(B, 32, H, W\)'):
        layer(torch.randn(2, 16, 4, 4))
    with pytest.raises(ValueError, match=r'\(B, 32, H, W\)'):
        layer(torch.randn(2, 32, 16))
    with pytest.raises(ValueError, match='divisible by num_heads'):
        SECAttention(30, 4, num_clusters=2)
    with pytest.raises(ValueError, match='exactly one of'):
        SECAttention(32, 4)
    with pytest.raises(ValueError, match='exactly one of'):
        SECAttention(32, 4, num_clusters=2, cluster_size=8)
    with pytest.raises(ValueError, match='divisible by 4'):
        SECAttention(12, 2, num_clusters=2)  # head dim 6 cannot carry 2-D RoPE
