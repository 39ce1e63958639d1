import torch

from sec_mm.models.layers import RotaryEmbedding2d, apply_rope, rotate_pairs


def test_rotate_pairs():
    x = torch.tensor([1., 2., 3., 4.])
    assert rotate_pairs(x).tolist() == [-2., 1., -4., 3.]


def test_angles_match_release_formula():
    rope = RotaryEmbedding2d(16)
    expected = (1 / 10000**torch.linspace(0, 1, 4)).repeat_interleave(2)
    torch.testing.assert_close(rope.angle, expected)
    assert 'angle' not in rope.state_dict()  # derived, not saved


def test_rotation_keeps_norms_and_encodes_relative_position():
    rope = RotaryEmbedding2d(8)
    sin, cos = rope(6, 6)
    q, k = torch.randn(8), torch.randn(8)
    rotated = apply_rope(q.expand(36, 8), sin, cos)
    torch.testing.assert_close(rotated.norm(dim=-1), q.norm().expand(36))

    def score(pos_q, pos_k):  # positions as (row, col) in the 6x6 grid
        i, j = pos_q[0] * 6 + pos_q[1], pos_k[0] * 6 + pos_k[1]
        return apply_rope(q, sin[i], cos[i]) @ apply_rope(k, sin[j], cos[j])

    # Same offset, different absolute positions -> same score.
    torch.testing.assert_close(score((1, 2), (3, 1)), score((2, 4), (4, 3)))
    assert not torch.allclose(score((1, 2), (3, 1)), score((1, 2), (1, 3)))


def test_first_half_follows_rows_second_half_columns():
    sin, _ = RotaryEmbedding2d(8)(3, 4)
    grid = sin.reshape(3, 4, 8)
    assert torch.equal(grid[:, 0, :4], grid[:, 3, :4])  # row part constant along a row
    assert torch.equal(grid[0, :, 4:], grid[2, :, 4:])  # column part constant down a column


def test_apply_rope_qk_equals_apply_rope_for_strided_token_major_inputs():
    from sec_mm.models.layers import apply_rope_qk
    sin, cos = RotaryEmbedding2d(8)(3, 5)
    packed = torch.randn(2, 15, 3, 4, 8)  # (B, L, 3, heads, d): a qkv projection's layout
    q, k = packed[:, :, 0], packed[:, :, 1]
    out = apply_rope_qk(q, k, sin, cos)
    assert out.shape == (2, 2, 4, 15, 8) and out.is_contiguous()
    expected = torch.stack([apply_rope(t.transpose(1, 2), sin, cos) for t in (q, k)])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)


def test_apply_rope_qk_gradients():
    from sec_mm.models.layers import apply_rope_qk
    sin, cos = (t.double() for t in RotaryEmbedding2d(4)(2, 3))
    q = torch.randn(1, 6, 2, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 6, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, k: apply_rope_qk(q, k, sin, cos), (q, k))
    assert torch.autograd.gradgradcheck(lambda q, k: apply_rope_qk(q, k, sin, cos), (q, k))


def test_apply_rope_qk_promotes_half_precision_like_the_release():
    from sec_mm.models.layers import apply_rope_qk
    sin, cos = RotaryEmbedding2d(8)(2, 2)
    q = torch.randn(1, 4, 1, 8).bfloat16()
    out = apply_rope_qk(q, q, sin, cos)
    assert out.dtype == torch.float32  # as q * cos with float32 tables
    torch.testing.assert_close(out[0], apply_rope(q.float().transpose(1, 2), sin, cos))
