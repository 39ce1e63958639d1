import pytest
import torch
from mmpretrain.models.utils import MultiheadAttention

import sec_mm  # noqa: F401
from sec_mm.models.layers import (RotaryEmbedding2d, SECAttention, SECMultiheadAttention,
                                  apply_rope)
from sec_mm.ops import sec_cluster_sizes, sec_order


def masked_reference(attn, x, num_clusters, hw_shape=None):
    """SEC attention with a class token written as one dense attention with a mask.

    Patch token i sees the class token and the patch tokens of its own cluster (clusters cut
    from the key-similarity order as torch.tensor_split cuts); the class token sees everything.
    With ``hw_shape``, RoPE rotates the patch tokens' queries and keys first.
    """
    batch, length, channels = x.shape
    heads, head_dims = attn.num_heads, attn.head_dims
    q, k, v = attn.qkv(x).reshape(batch, length, 3, heads, head_dims).permute(2, 0, 3, 1, 4)
    if hw_shape is not None:
        sin, cos = RotaryEmbedding2d(head_dims)(*hw_shape)
        q, k = (torch.cat([t[:, :, :1], apply_rope(t[:, :, 1:], sin, cos)], dim=2)
                for t in (q, k))
    order = sec_order(k[:, :, 1:])
    num_patches = length - 1
    cluster_of_rank = torch.cat([torch.full((size, ), i) for i, size in
                                 enumerate(sec_cluster_sizes(num_patches, num_clusters))])
    cluster = torch.empty_like(order)
    cluster.scatter_(-1, order, cluster_of_rank.expand_as(order).contiguous())
    allowed = torch.ones(batch, heads, length, length, dtype=torch.bool)
    allowed[:, :, 1:, 1:] = cluster[..., :, None] == cluster[..., None, :]
    logits = (q @ k.transpose(-1, -2)) * head_dims**-0.5
    weights = logits.masked_fill(~allowed, float('-inf')).softmax(-1)
    out = (weights @ v).transpose(1, 2).reshape(batch, length, channels)
    return attn.proj(out)


@pytest.mark.parametrize('num_patches,num_clusters', [(36, 4), (35, 4), (35, 8)])
def test_class_token_is_global_and_patches_attend_within_clusters(num_patches, num_clusters):
    torch.manual_seed(0)
    attn = SECMultiheadAttention(32, 4, num_clusters=num_clusters, num_extra_tokens=1).eval()
    x = torch.randn(2, 1 + num_patches, 32)
    with torch.no_grad():
        ours = attn(x)
        reference = masked_reference(attn, x, num_clusters)
    assert torch.allclose(ours, reference, atol=1e-5)


def test_rope_rotates_patch_tokens_only_and_class_token_stays_global():
    torch.manual_seed(0)
    height, width = 5, 7
    attn = SECMultiheadAttention(32, 4, num_clusters=4, num_extra_tokens=1,
                                 use_rope=True).eval()
    x = torch.randn(2, 1 + height * width, 32)
    with torch.no_grad():
        ours = attn(x, (height, width))
        reference = masked_reference(attn, x, 4, (height, width))
        without_rope = masked_reference(attn, x, 4)
    assert torch.allclose(ours, reference, atol=1e-5)
    assert not torch.allclose(ours, without_rope, atol=1e-3)


def test_one_cluster_is_mmpretrain_multihead_attention():
    torch.manual_seed(0)
    stock = MultiheadAttention(48, 3).eval()
    sec = SECMultiheadAttention(48, 3, num_clusters=1, num_extra_tokens=1).eval()
    sec.load_state_dict(stock.state_dict())
    x = torch.randn(2, 50, 48)
    with torch.no_grad():
        assert torch.equal(sec(x), stock(x))
    # More clusters really change the result.
    sec.num_clusters = 7
    with torch.no_grad():
        assert not torch.allclose(sec(x), stock(x), atol=1e-3)


def test_token_layout_matches_the_nchw_secvit_layer():
    """With RoPE and LCE, the token layer computes the SECViT release layer."""
    torch.manual_seed(0)
    height, width, channels = 7, 9, 32
    nchw = SECAttention(channels, 2, num_clusters=3).eval()
    tokens = SECMultiheadAttention(channels, 2, num_clusters=3, use_rope=True,
                                   use_lce=True).eval()
    with torch.no_grad():
        tokens.qkv.weight.copy_(nchw.qkv.weight.flatten(1))
        tokens.qkv.bias.copy_(nchw.qkv.bias)
        tokens.proj.weight.copy_(nchw.proj.weight.flatten(1))
        tokens.proj.bias.copy_(nchw.proj.bias)
        tokens.lce.load_state_dict(nchw.lce.state_dict())
        image = torch.randn(2, channels, height, width)
        expected = nchw(image).flatten(2).transpose(1, 2)
        ours = tokens(image.flatten(2).transpose(1, 2), (height, width))
    assert torch.allclose(ours, expected, atol=1e-5)


def test_cluster_size_mode_and_gradients():
    attn = SECMultiheadAttention(16, 2, cluster_size=5, num_extra_tokens=1, use_lce=True,
                                 use_rope=True)
    x = torch.randn(2, 1 + 4 * 6, 16, requires_grad=True)
    attn(x, (4, 6)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in attn.parameters())


def test_bad_input_is_named():
    with pytest.raises(ValueError, match='attention weights'):
        SECMultiheadAttention(16, 2, num_clusters=2, attn_drop=0.1)
    with pytest.raises(ValueError, match='exactly one of'):
        SECMultiheadAttention(16, 2)
    with pytest.raises(ValueError, match='divisible'):
        SECMultiheadAttention(15, 2, num_clusters=2)
    attn = SECMultiheadAttention(16, 2, num_clusters=2, use_lce=True)
    with pytest.raises(ValueError, match='hw_shape'):
        attn(torch.randn(1, 12, 16))
    with pytest.raises(ValueError, match='do not fit hw_shape'):
        attn(torch.randn(1, 12, 16), (3, 5))
    with pytest.raises(ValueError, match=r'\(B, N, 16\)'):
        attn(torch.randn(1, 12, 8), (3, 4))


def attention_input_ranks(run):
    """Ranks of q, k, v of every ``scaled_dot_product_attention`` that ``run()`` calls."""
    with torch.profiler.profile(record_shapes=True) as profile:
        run()
    return [tuple(len(shape) for shape in event.input_shapes[:3])
            for event in profile.events() if event.name == 'aten::scaled_dot_product_attention']


@pytest.mark.parametrize('num_patches,num_clusters', [(36, 4), (35, 4)])
def test_class_token_path_calls_4d_attention(num_patches, num_clusters):
    # bfloat16 takes scaled_dot_product_attention on every device (the CPU float32 path has
    # its own kernel for short clusters); 5-D inputs would run SDPA's unfused math kernel.
    torch.manual_seed(0)
    attn = SECMultiheadAttention(32, 4, num_clusters=num_clusters, num_extra_tokens=1)
    attn = attn.to(torch.bfloat16)
    x = torch.randn(2, 1 + num_patches, 32, dtype=torch.bfloat16, requires_grad=True)
    ranks = attention_input_ranks(lambda: attn(x).float().square().sum().backward())
    # The class token's row, then one call per cluster size.
    assert len(ranks) == (2 if num_patches % num_clusters else 1) + 1
    assert set(ranks) == {(4, 4, 4)}
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize('layer', ['tokens', 'map'])
def test_rope_and_order_in_float32_under_autocast(layer, cpu_autocast_dtype):
    """Both SEC layers rotate q and k with float32 tables under autocast and cluster on those
    float32 keys, as the release computes ``q * cos``."""
    from sec_mm.models.layers.rope import apply_rope
    torch.manual_seed(0)
    height, width, channels, heads = 8, 7, 32, 2
    if layer == 'tokens':
        attn = SECMultiheadAttention(channels, heads, num_clusters=4, use_rope=True,
                                     use_lce=True)
        x = torch.randn(2, height * width, channels)
        call = dict(hw_shape=(height, width))
    else:
        attn = SECAttention(channels, heads, num_clusters=4)
        x = torch.randn(2, channels, height, width)
        call = {}
    seen = []
    attn.order_probe.register_forward_hook(lambda module, args, out: seen.append(out))
    dtype = cpu_autocast_dtype
    with torch.autocast('cpu', dtype=dtype):
        qkv = attn.qkv(x)
        if layer == 'map':
            qkv = qkv.flatten(2).transpose(1, 2)
        assert qkv.dtype == dtype
        k = qkv.reshape(2, height * width, 3, heads, -1)[:, :, 1].transpose(1, 2)
        sin, cos = attn.rope(height, width)
        out = attn(x, **call)
    k = apply_rope(k.float(), sin, cos)
    assert out.shape == x.shape and torch.isfinite(out.float()).all()
    assert len(seen) == 1 and torch.equal(seen[0], sec_order(k))
