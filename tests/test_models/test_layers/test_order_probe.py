"""The ``order_probe`` of the SEC attention layers: forward hooks see the clusters' token
order, and the probe changes neither the results nor the checkpoints."""
import pytest
import torch
import torch.nn.functional as F

import sec_mm  # noqa: F401
from sec_mm.models.layers import SECAttention, SECMultiheadAttention, apply_rope
from sec_mm.ops import sec_attention, sec_order


def capture_orders(layer, x, **kwargs):
    """The layer's output and every tensor that passed its order probe."""
    seen = []
    handle = layer.order_probe.register_forward_hook(lambda m, i, out: seen.append(out))
    try:
        with torch.no_grad():
            out = layer(x, **kwargs)
    finally:
        handle.remove()
    return out, seen


def secvit_keys(layer, x):
    """Keys of the (B, C, H, W) SECViT layer, written out: qkv conv, channels split as
    (3, heads, head_dims), RoPE."""
    batch, _, height, width = x.shape
    qkv = F.conv2d(x, layer.qkv.weight, layer.qkv.bias)
    k = qkv.reshape(batch, 3, layer.num_heads, layer.head_dims, height * width)[:, 1]
    sin, cos = (t.to(x.dtype) for t in layer.rope(height, width))
    return apply_rope(k.transpose(-1, -2), sin, cos)


def test_secvit_layer_probe_sees_the_order_of_its_keys_and_changes_nothing():
    torch.manual_seed(0)
    layer = SECAttention(32, 4, num_clusters=5).double().eval()
    x = torch.randn(2, 32, 6, 7, dtype=torch.float64)
    out, seen = capture_orders(layer, x)
    assert len(seen) == 1 and seen[0].shape == (2, 4, 42) and seen[0].dtype == torch.int64
    assert torch.equal(seen[0], sec_order(secvit_keys(layer, x)))
    # Same output as without any hook, bit for bit, and as the attention written out with
    # the order computed inside sec_attention.
    with torch.no_grad():
        assert torch.equal(layer(x), out)
        qkv = F.conv2d(x, layer.qkv.weight, layer.qkv.bias).reshape(2, 3, 4, 8, 42)
        q, k, v = qkv.transpose(-1, -2).unbind(1)
        sin, cos = layer.rope(6, 7)
        attn = sec_attention(apply_rope(q, sin, cos), apply_rope(k, sin, cos), v, 5)
        lce = layer.lce(v.transpose(-1, -2).reshape(2, 32, 6, 7))
        expected = layer.proj(attn.transpose(-1, -2).reshape(2, 32, 6, 7) + lce)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_probe_holds_no_state_and_stays_silent_for_global_attention():
    layer = SECAttention(16, 2, num_clusters=-1)
    assert not any('order_probe' in key for key in layer.state_dict())
    assert sum(p.numel() for p in layer.order_probe.parameters()) == 0
    _, seen = capture_orders(layer, torch.randn(1, 16, 4, 4))
    assert seen == []
    token_layer = SECMultiheadAttention(16, 2, num_clusters=1, num_extra_tokens=1)
    assert not any('order_probe' in key for key in token_layer.state_dict())
    _, seen = capture_orders(token_layer, torch.randn(1, 17, 16))
    assert seen == []


@pytest.mark.parametrize('num_extra_tokens', [0, 1])
def test_token_layer_probe_sees_the_order_of_the_image_keys(num_extra_tokens):
    torch.manual_seed(0)
    layer = SECMultiheadAttention(
        32, 4, num_clusters=3, num_extra_tokens=num_extra_tokens).eval()
    x = torch.randn(2, num_extra_tokens + 35, 32)
    out, seen = capture_orders(layer, x)
    keys = layer.qkv(x).reshape(2, -1, 3, 4, 8)[:, num_extra_tokens:, 1].transpose(1, 2)
    assert len(seen) == 1 and seen[0].shape == (2, 4, 35)
    assert torch.equal(seen[0], sec_order(keys))
    with torch.no_grad():
        assert torch.equal(layer(x), out)
