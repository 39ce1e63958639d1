"""The export formulation of SEC attention (sec_mm/ops/sec_attention_export.py) in eager mode:
the padded cluster layout cuts as ``tensor_split`` cuts, and the result equals
:func:`sec_attention`'s. ONNX Runtime runs of it are in tests/test_tools/test_pytorch2onnx.py."""
import pytest
import torch

from sec_mm.ops import sec_attention, sec_cluster_sizes, sec_order
from sec_mm.ops.sec_attention_export import (gather_rows, padded_cluster_layout,
                                             sec_attention_exportable)


@pytest.mark.parametrize('length, clusters', [(12, 4), (10, 3), (2900, 32), (7, 7), (9, 2)])
def test_padded_layout_cuts_like_tensor_split(length, clusters):
    positions, valid, slot_of = padded_cluster_layout(length, clusters)
    size = -(-length // clusters)
    assert positions.shape == valid.shape == (clusters, size)
    assert valid.sum(1).tolist() == sec_cluster_sizes(length, clusters)
    # The valid slots hold 0..L-1 once each, cluster after cluster, in sorted order.
    assert torch.equal(positions[valid], torch.arange(length))
    # slot_of points every sorted position at its valid slot.
    assert torch.equal(positions.flatten()[slot_of], torch.arange(length))
    assert bool(valid.flatten()[slot_of].all())


@pytest.mark.parametrize('length, clusters', [(2900, 32), (3136, 32), (101, 8)])
def test_exportable_attention_equals_sec_attention(length, clusters):
    generator = torch.Generator().manual_seed(length)
    q, k, v = torch.randn(3, 2, 3, length, 16, generator=generator).unbind(0)
    expected = sec_attention(q, k, v, num_clusters=clusters)
    got = sec_attention_exportable(q, k, v, sec_order(k), clusters, 16**-0.5)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_gather_rows_indexes_tokens():
    x = torch.arange(2 * 3 * 5 * 4.).view(2, 3, 5, 4)
    index = torch.tensor([4, 0, 0, 2]).expand(2, 3, 4)
    assert torch.equal(gather_rows(x, index), x[:, :, [4, 0, 0, 2]])
