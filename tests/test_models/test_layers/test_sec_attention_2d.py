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


def reference_layer(layer, x):
    """The released layer written out directly (float64, per-(image, head) clustering)."""
    import torch.nn.functional as F

    from sec_mm.models.layers import apply_rope
    batch, channels, height, width = x.shape
    heads, dims = layer.num_heads, layer.head_dims
    qkv = F.conv2d(x, layer.qkv.weight, layer.qkv.bias)
    lce = F.conv2d(qkv[:, 2 * channels:], layer.lce.weight, layer.lce.bias, padding=2,
                   groups=channels)
    q, k, v = qkv.reshape(batch, 3, heads, dims, height * width).transpose(-1, -2).unbind(1)
    sin, cos = (t.to(x.dtype) for t in layer.rope(height, width))
    q, k = apply_rope(q, sin, cos), apply_rope(k, sin, cos) * dims**-0.5
    out = torch.empty_like(q)
    for b in range(batch):
        for h in range(heads):
            sim = F.cosine_similarity(k[b, h], k[b, h].mean(0, keepdim=True), dim=-1)
            order = torch.sort(sim, stable=True).indices
            for cluster in torch.tensor_split(order, layer.num_clusters):
                attn = (q[b, h, cluster] @ k[b, h, cluster].T).softmax(-1)
                out[b, h, cluster] = attn @ v[b, h, cluster]
    out = out.transpose(-1, -2).reshape(batch, channels, height, width) + lce
    return F.conv2d(out, layer.proj.weight, layer.proj.bias)


def test_matches_the_released_layer_written_out_in_float64():
    torch.manual_seed(0)
    layer = SECAttention(32, 2, num_clusters=3).double()
    x = torch.randn(2, 32, 6, 7, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    expected = reference_layer(layer, x)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-10)
    grad = torch.randn_like(out)
    ours = torch.autograd.grad(out, [x, layer.qkv.weight, layer.lce.weight], grad)
    theirs = torch.autograd.grad(expected, [x, layer.qkv.weight, layer.lce.weight], grad)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_input_memory_layout_does_not_change_the_result():
    torch.manual_seed(0)
    layer = SECAttention(32, 4, num_clusters=4)
    x = torch.randn(2, 32, 8, 10)
    torch.testing.assert_close(layer(x), layer(x.contiguous(memory_format=torch.channels_last)))


def test_bfloat16_autocast_stays_close_to_float32():
    torch.manual_seed(0)
    x = torch.randn(2, 64, 16, 16)
    for num_clusters in (8, -1):
        layer = SECAttention(64, 2, num_clusters=num_clusters)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = layer(x)
        assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
        if num_clusters == -1:
            # Without clustering only rounding differs. (With clusters, bfloat16 keys move
            # near-tied tokens across cluster borders: a few percent, like the release.)
            full = layer(x)
            assert ((low.float() - full).norm() / full.norm()) < 1e-2
