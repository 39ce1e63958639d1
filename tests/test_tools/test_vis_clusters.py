"""tools/visualization/vis_clusters.py on a tiny SECViT classifier (random weights)."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sec_mm.models.layers import apply_rope
from sec_mm.ops import sec_cluster_sizes
from tool_helpers import load_tool

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = REPO_ROOT / 'tools' / 'visualization' / 'vis_clusters.py'

# The tiny classifier's grids and clusters (conftest.py) at its 72x88 input.
GRIDS = [(18, 22), (9, 11), (5, 6), (3, 3)]
CLUSTERS = [32, 8, 2, 1]


@pytest.fixture(scope='module')
def tool():
    return load_tool('visualization/vis_clusters.py')


@pytest.fixture(scope='module')
def setup(tiny_secvit_classifier, shapes_image):
    config, checkpoint = tiny_secvit_classifier
    return config, shapes_image, checkpoint


def similarities(attn, x, head):
    """Cosine similarity of every token's key to the mean key, written out for one head."""
    height, width = x.shape[-2:]
    with torch.no_grad():
        qkv = F.conv2d(x.double(), attn.qkv.weight.double(), attn.qkv.bias.double())
    k = qkv.reshape(3, attn.num_heads, attn.head_dims, height * width)[1, head].T
    sin, cos = (t.double() for t in attn.rope(height, width))
    k = apply_rope(k, sin, cos)
    return F.cosine_similarity(k, k.mean(0, keepdim=True), dim=-1).numpy()


def test_cluster_maps_of_every_stage(tool, setup):
    config, image_path, checkpoint = setup
    cfg = tool.load_config(str(config))
    model = tool.init_model(cfg, str(checkpoint), 'cpu')
    inputs, image = tool.prepare_image(model, cfg, str(image_path))
    assert tuple(inputs.shape) == (1, 3, 72, 88) and image.shape == (72, 88, 3)

    layers = tool.resolve_layers(model, None)
    assert layers == ['backbone.stages.0.blocks.0.attn', 'backbone.stages.1.blocks.1.attn',
                      'backbone.stages.2.blocks.0.attn', 'backbone.stages.3.blocks.0.attn']
    captured = {}
    attn = model.backbone.stages[1].blocks[1].attn
    handle = attn.register_forward_pre_hook(lambda m, args: captured.update(x=args[0]))
    maps = tool.compute_cluster_maps(model, inputs, layers, head=1)
    handle.remove()

    for cluster_map, grid, count in zip(maps, GRIDS, CLUSTERS):
        assert cluster_map.ids.shape == grid and cluster_map.num_clusters == count
        # Every cluster holds the tokens tensor_split gives it.
        tokens_per_cluster = np.bincount(cluster_map.ids.ravel(), minlength=count)
        assert tokens_per_cluster.tolist() == sec_cluster_sizes(grid[0] * grid[1], count)

    # Clusters are bands of key similarity, in order, laid out on the row-major token grid.
    ids = maps[1].ids.ravel()
    sims = similarities(attn, captured['x'], head=1)
    for cluster in range(7):
        assert sims[ids == cluster].max() <= sims[ids == cluster + 1].min() + 1e-6

    # The majority over heads: head 0 where the two heads of stage 2 agree.
    majority = tool.compute_cluster_maps(model, inputs, layers[1:2], head='majority')[0]
    head0 = tool.compute_cluster_maps(model, inputs, layers[1:2], head=0)[0]
    agree = head0.ids == maps[1].ids
    assert agree.any() and np.array_equal(majority.ids[agree], head0.ids[agree])


@pytest.mark.parametrize('backbone_type', ['SECSwinTransformer', 'SECVisionTransformer'])
def test_token_grids_of_sec_swin_and_sec_deit(tool, backbone_type):
    """SEC-Swin passes its grid to the attention; SEC-DeiT's comes from the patch embedding."""
    from sec_mm.models import SECSwinTransformer, SECVisionTransformer
    torch.manual_seed(0)
    if backbone_type == 'SECSwinTransformer':
        backbone = SECSwinTransformer(
            arch=dict(embed_dims=16, depths=[1, 1, 1, 1], num_heads=[2, 2, 2, 2]))
        expected = [((16, 24), 32), ((8, 12), 8), ((4, 6), 2), ((2, 3), 1)]
    else:
        backbone = SECVisionTransformer(
            arch=dict(embed_dims=16, num_layers=2, num_heads=2, feedforward_channels=32),
            img_size=(64, 96))
        expected = [((4, 6), 4), ((4, 6), 4)]
    layers = tool.resolve_layers(backbone.eval(), None)
    maps = tool.compute_cluster_maps(backbone, torch.randn(1, 3, 64, 96), layers, head=1)
    assert [(m.ids.shape, m.num_clusters) for m in maps] == expected
    for cluster_map in maps:
        grid, count = cluster_map.ids.shape, cluster_map.num_clusters
        assert np.bincount(cluster_map.ids.ravel(), minlength=count).tolist() == \
            sec_cluster_sizes(grid[0] * grid[1], count)


def test_cli_writes_one_panel_per_clustering_stage(tool, setup, tmp_path):
    config, image_path, checkpoint = setup
    out = tmp_path / 'maps.png'
    maps = tool.main([str(config), str(checkpoint), str(image_path), '--out', str(out),
                      '--alpha', '1', '--panel-size', '176'])
    # Stage 4 attends globally: no panel.
    assert [m.num_clusters for m in maps] == [32, 8, 2]

    png = cv2.imread(str(out))[..., ::-1]
    assert png.shape[:2] == tool.figure_shape((72, 88), 4, 176) == (44 + 144 + 8, 4 * 176 + 40)
    # With opaque colours every panel shows exactly its clusters' colours.
    top = png.shape[0] - tool.GAP - 144
    for i, cluster_map in enumerate(maps, start=1):
        left = tool.GAP + i * (176 + tool.GAP)
        panel = png[top + 1:top + 143, left + 1:left + 175].reshape(-1, 3)
        colours = {tuple(c) for c in np.unique(panel, axis=0)}
        assert len(colours) == cluster_map.num_clusters

    # Random weights without a checkpoint: other clusters.
    maps_random = tool.main([str(config), str(image_path), '--out', str(out),
                             '--layers', 'stages.0.blocks.0.attn'])
    assert len(maps_random) == 1 and not np.array_equal(maps_random[0].ids, maps[0].ids)


def test_bad_arguments_are_named(tool, setup, tmp_path):
    config, image_path, checkpoint = setup
    with pytest.raises(ValueError, match=r"--layers: 'stages.9.attn' is not a SEC attention "
                                         r'layer.*backbone.stages.0.blocks.0.attn'):
        tool.main([str(config), str(image_path), '--layers', 'stages.9.attn'])
    with pytest.raises(ValueError, match='--head 2 does not exist: the layer has 2 heads'):
        tool.main([str(config), str(image_path), '--head', '2', '--out',
                   str(tmp_path / 'x.png'), '--layers', 'stages.1.blocks.0.attn'])
    with pytest.raises(SystemExit):
        tool.parse_args([str(config), str(image_path), '--head', 'most'])
