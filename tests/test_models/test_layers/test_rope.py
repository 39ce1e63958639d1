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


def test_split_qkv_with_rope_equals_apply_rope_for_a_strided_projection():
    from sec_mm.ops.dispatch import split_qkv_with_rope
    sin, cos = RotaryEmbedding2d(8)(3, 5)
    # (B, L, 3, heads, d) as a view of a channels-last projection (B, 3 * heads * d, H, W).
    projection = torch.randn(2, 96, 3, 5).contiguous(memory_format=torch.channels_last)
    qkv = projection.permute(0, 2, 3, 1).reshape(2, 15, 3, 4, 8)
    q, k, v = split_qkv_with_rope(qkv, sin, cos)
    assert q.shape == k.shape == (2, 4, 15, 8) and q.is_contiguous() and k.is_contiguous()
    for rotated, index in ((q, 0), (k, 1)):
        torch.testing.assert_close(rotated, apply_rope(qkv[:, :, index].transpose(1, 2), sin,
                                                       cos), atol=1e-6, rtol=1e-6)
    assert torch.equal(v, qkv[:, :, 2]) and v.is_contiguous()


def test_split_qkv_with_rope_gradients():
    from sec_mm.ops.dispatch import split_qkv_with_rope
    sin, cos = (t.double() for t in RotaryEmbedding2d(4)(2, 3))
    qkv = torch.randn(2, 6, 3, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: split_qkv_with_rope(t, sin, cos), (qkv, ))
    # Outputs that do not reach the loss get zero gradient.
    q, _, v = split_qkv_with_rope(qkv, sin, cos)
    grad, = torch.autograd.grad((q.sum() + v.sum()), qkv)
    assert grad[:, :, 1].eq(0).all() and grad[:, :, 2].eq(1).all()
    expected, = torch.autograd.grad(apply_rope(qkv[:, :, 0].transpose(1, 2), sin, cos).sum(),
                                    qkv)
    torch.testing.assert_close(grad[:, :, 0], expected[:, :, 0])


def test_split_qkv_with_rope_promotes_half_precision_like_the_release():
    from sec_mm.ops.dispatch import split_qkv_with_rope
    sin, cos = RotaryEmbedding2d(8)(2, 2)
    qkv = torch.randn(1, 4, 3, 1, 8).bfloat16()
    q, k, v = split_qkv_with_rope(qkv, sin, cos)
    assert q.dtype == k.dtype == torch.float32 and v.dtype == torch.bfloat16  # as q * cos
    torch.testing.assert_close(k, apply_rope(qkv[:, :, 1].float().transpose(1, 2), sin, cos))
