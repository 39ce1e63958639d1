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
