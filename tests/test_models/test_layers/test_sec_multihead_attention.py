import pytest
import torch
from mmpretrain.models.utils import MultiheadAttention

import sec_mm  # noqa: F401
from sec_mm.models.layers import SECAttention, SECMultiheadAttention
from sec_mm.ops import sec_cluster_sizes, sec_order


def masked_reference(attn, x, num_clusters):
    """SEC attention with a class token written as one dense attention with a mask.

    Patch token i sees the class token and the patch tokens of its own cluster (clusters cut
    from the key-similarity order as torch.tensor_split cuts); the class token sees everything.
    """
    batch, length, channels = x.shape
    heads, head_dims = attn.num_heads, attn.head_dims
    q, k, v = attn.qkv(x).reshape(batch, length, 3, heads, head_dims).permute(2, 0, 3, 1, 4)
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
