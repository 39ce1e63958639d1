"""tools/deployment/pytorch2onnx.py: tiny SECViT classifiers and backbones in ONNX Runtime.

A tiny SECViT (one block per stage) with the model's own random initialisation is exported
through the tool's command line; ONNX Runtime must match PyTorch within 1e-4 at 224x224 and
at 200x232 (not a multiple of 32), from one ``--dynamic`` file, and cluster every layer's
tokens as PyTorch does.
"""
import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from sec_mm.models.layers import SECAttention
from sec_mm.ops import resolve_num_clusters, sec_cluster_sizes, sec_order
from sec_mm.ops.dispatch import split_qkv_with_rope
from tool_helpers import load_tool

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = REPO_ROOT / 'tools' / 'deployment' / 'pytorch2onnx.py'
CLS_CONFIG = REPO_ROOT / 'configs' / 'classification' / 'secvit' / 'secvit-t_8xb128_in1k.py'
DET_CONFIG = REPO_ROOT / 'configs' / 'detection' / 'secvit' / 'mask-rcnn_secvit-t_fpn_1x_coco.py'

MISSING = [name for name in ('onnx', 'onnxruntime') if importlib.util.find_spec(name) is None]
needs_onnx = pytest.mark.skipif(
    bool(MISSING), reason=f'{" and ".join(MISSING)} not installed (pip install -e ".[onnx]")')
# The dynamo exporter writes its graphs with onnxscript (same extra).
DYNAMO_MISSING = MISSING + ([] if importlib.util.find_spec('onnxscript') else ['onnxscript'])
needs_dynamo = pytest.mark.skipif(
    bool(DYNAMO_MISSING),
    reason=f'{" and ".join(DYNAMO_MISSING)} not installed (pip install -e ".[onnx]")')

TINY_ARCH = dict(embed_dims=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8])
# Uneven clusters at both sizes (2900 and 3136 tokens in stage 1). Fewer cluster boundaries
# than the papers' (32, 8, 2): a token whose similarity lies within float rounding of a
# boundary may change clusters between runtimes (see the README), and with 30-odd boundaries
# such near-ties turn up on most inputs, and exact checks would depend on rounding.
TINY_CLUSTERS = (6, 3, 2, -1)
SIZES = [(224, 224), (200, 232)]
ATOL = 1e-4


tool = load_tool('deployment/pytorch2onnx.py')


pytestmark = pytest.mark.usefixtures('single_thread')


def _write_config(path: Path, base: Path, model: str) -> Path:
    path.write_text(f"_base_ = '{base}'\nmodel = {model}\n")
    return path


def _build(config: Path, part: str = 'model'):
    cfg = Config.fromfile(str(config))
    scope = cfg.default_scope
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(cfg.model if part == 'model' else cfg.model[part])
    return model


def _randomise(model: torch.nn.Module) -> torch.nn.Module:
    """The model's own initialisation plus random BatchNorm statistics."""
    torch.manual_seed(0)
    model.init_weights()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.)
    return model


def _save(model: torch.nn.Module, path: Path) -> Path:
    """A checkpoint laid out as the Runner writes it."""
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return path


@pytest.fixture(scope='module')
def classifier(tmp_path_factory):
    """A tiny SECViT classifier config (5 classes) and a random checkpoint of it."""
    root = tmp_path_factory.mktemp('cls')
    config = _write_config(
        root / 'tiny_secvit_cls.py', CLS_CONFIG,
        f'dict(backbone=dict(arch=dict(_delete_=True, **{TINY_ARCH}), drop_path_rate=0., '
        f'num_clusters={TINY_CLUSTERS}), '
        'head=dict(num_classes=5, in_channels=128, hidden_channels=64))')
    model = _randomise(_build(config))
    # The head's default std of 0.02 gives logits of ~1e-3; larger weights make 1e-4 mean
    # something.
    torch.nn.init.normal_(model.head.fc.weight, std=1.)
    return config, _save(model, root / 'tiny_secvit_cls.pth')


@pytest.fixture(scope='module')
def detector(tmp_path_factory):
    """A tiny SECViT Mask R-CNN config and a random checkpoint of the whole detector."""
    root = tmp_path_factory.mktemp('det')
    config = _write_config(
        root / 'tiny_secvit_mask_rcnn.py', DET_CONFIG,
        f'dict(backbone=dict(arch=dict(_delete_=True, **{TINY_ARCH}), drop_path_rate=0., '
        f'num_clusters={TINY_CLUSTERS}, init_cfg=None), '
        'neck=dict(in_channels=[16, 32, 64, 128]))')
    return config, _save(_randomise(_build(config)), root / 'tiny_secvit_mask_rcnn.pth')


def _eager(config: Path, checkpoint: Path, part: str = 'model') -> torch.nn.Module:
    """The PyTorch model the file was exported from, rebuilt and loaded here."""
    model = _build(config, part)
    state = torch.load(checkpoint, map_location='cpu')['state_dict']
    if part == 'backbone':
        state = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    model.load_state_dict(state)
    return model.eval()


def _max_diffs(session, model, batch: int = 1):
    """Max abs difference ONNX Runtime vs PyTorch of every output, at every size in SIZES."""
    diffs = []
    for height, width in SIZES:
        x = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            expected = model(x)
        expected = [expected] if torch.is_tensor(expected) else list(expected)
        got = session.run(None, {'input': x.numpy()})
        assert [g.shape for g in got] == [tuple(e.shape) for e in expected]
        diffs.append(max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected)))
        # Outputs of order 1: an absolute 1e-4 is a real bound.
        assert max(float(e.abs().max()) for e in expected) > 0.1
    return diffs


def _session(path):
    import onnxruntime
    return onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])


def _toy_image(seed: int = 3, size: int = 256) -> np.ndarray:
    """An RGB toy scene (shapes on a textured background) from tools/misc."""
    toy = load_tool('misc/make_toy_datasets.py')
    return toy.render_scene(np.random.default_rng(seed), size, 4)[0]


@pytest.fixture(scope='module')
def backbone_onnx(detector, tmp_path_factory):
    """The detector's backbone, exported by the tool with --dynamic (TorchScript exporter)
    and checked by it on a toy image at both sizes (its tests carry needs_onnx)."""
    config, checkpoint = detector
    root = tmp_path_factory.mktemp('onnx')
    image = root / 'scene.png'
    cv2.imwrite(str(image), cv2.cvtColor(_toy_image(), cv2.COLOR_RGB2BGR))
    out = root / 'backbone.onnx'
    code = tool.main([str(config), str(checkpoint), '--shape', '224', '224', '--dynamic',
                      '--verify', '--verify-shape', '200', '232', '--verify-image', str(image),
                      '--out', str(out)])
    assert code == 0
    return out


@needs_onnx
def test_classifier_one_dynamic_file_matches_pytorch_at_two_sizes(classifier, tmp_path,
                                                                  capsys):
    config, checkpoint = classifier
    out = tmp_path / 'classifier.onnx'
    code = tool.main([str(config), str(checkpoint), '--shape', '224', '224', '--dynamic',
                      '--verify', '--verify-shape', '200', '232', '--out', str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert printed.count('-> OK') == 2
    assert 'at 2x3x200x232' in printed
    diffs = _max_diffs(_session(out), _eager(config, checkpoint), batch=3)
    assert max(diffs) <= ATOL, diffs


@needs_onnx
def test_backbone_one_dynamic_file_matches_pytorch_at_two_sizes(detector, backbone_onnx):
    import onnx
    graph = onnx.load(str(backbone_onnx)).graph
    assert [o.name for o in graph.output] == ['feat0', 'feat1', 'feat2', 'feat3']
    assert [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim] == \
        ['batch', '', 'height', 'width']
    model = _eager(*detector, part='backbone')
    diffs = _max_diffs(_session(backbone_onnx), model)
    assert max(diffs) <= ATOL, diffs


@needs_onnx
def test_backbone_clusters_match_pytorch_on_a_toy_image(detector, backbone_onnx, tmp_path):
    """The sorted token order of every clustered layer of the ONNX graph (its TopK outputs)
    puts the same tokens in each cluster as PyTorch's stable sort, on a toy scene."""
    import onnx
    image = torch.nn.functional.interpolate(
        torch.from_numpy(_toy_image()).permute(2, 0, 1)[None].float(), size=(200, 232),
        mode='bilinear', align_corners=False)
    x = (image - torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)) / \
        torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)

    # PyTorch: every SEC layer's keys, from its qkv conv's output, sorted by the eager op.
    model = _eager(*detector, part='backbone')
    layers = [m for m in model.modules() if isinstance(m, SECAttention)]
    eager_orders = []

    def keep_order(layer, height, width):

        def hook(module, inputs, qkv):
            qkv = qkv.permute(0, 2, 3, 1).reshape(qkv.shape[0], height * width, 3,
                                                  layer.num_heads, layer.head_dims)
            _, k, _ = split_qkv_with_rope(qkv, *layer.rope(height, width))
            count = resolve_num_clusters(height * width, layer.num_clusters, layer.cluster_size)
            eager_orders.append((sec_order(k), count))

        return hook

    sizes = [(50, 58), (25, 29), (13, 15), (7, 8)]  # 200x232 at strides 4..32
    handles = [layer.qkv.register_forward_hook(keep_order(layer, *sizes[i]))
               for i, layer in enumerate(layers)]
    with torch.no_grad():
        expected = model(x)
    for handle in handles:
        handle.remove()
    eager_orders = [(order, count) for order, count in eager_orders if count > 1]

    # ONNX: the TopK index outputs, in graph (= execution) order.
    graph_model = onnx.load(str(backbone_onnx))
    topk = [n for n in graph_model.graph.node if n.op_type == 'TopK']
    assert len(topk) == len(eager_orders) == 3  # stages 1-3 cluster, stage 4 is global
    for node in topk:
        graph_model.graph.output.append(
            onnx.helper.make_tensor_value_info(node.output[1], onnx.TensorProto.INT64, None))
    debug = tmp_path / 'backbone_topk.onnx'
    onnx.save(graph_model, str(debug))
    got = _session(debug).run(None, {'input': x.numpy()})
    assert max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected)) <= ATOL
    for (order, count), onnx_order in zip(eager_orders, got[len(expected):]):
        order = order.numpy()
        cluster = np.repeat(np.arange(count), sec_cluster_sizes(order.shape[-1], count))
        eager_cluster, onnx_cluster = np.empty_like(order), np.empty_like(order)
        np.put_along_axis(eager_cluster, order, cluster[None, None], -1)
        np.put_along_axis(onnx_cluster, onnx_order, cluster[None, None], -1)
        assert np.array_equal(eager_cluster, onnx_cluster)


class _Order(torch.nn.Module):

    def forward(self, keys):
        return sec_order(keys)


@needs_onnx
@pytest.mark.parametrize(
    'exporter', ['torchscript', pytest.param('dynamo', marks=needs_dynamo)])
def test_sort_breaks_ties_like_the_stable_sort(exporter, tmp_path):
    """Exact ties (tokens with equal keys) are ordered by token index in the exported
    graph, as the eager op's stable sort orders them."""
    generator = torch.Generator().manual_seed(0)
    # 5 distinct keys (similarities far apart), each repeated by ~600 of 3000 tokens.
    distinct = torch.tensor([[1., 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1],
                             [-1, 0, 1, 0]])
    keys = distinct[torch.randint(0, 5, (2, 3, 3000), generator=generator)]
    out = tmp_path / 'order.onnx'
    kwargs = dict(input_names=['keys'], output_names=['order'])
    if exporter == 'dynamo':
        torch.onnx.export(_Order(), (keys, ), str(out), dynamo=True, **kwargs)
    else:
        torch.onnx.export(_Order(), (keys, ), str(out), dynamo=False, opset_version=17,
                          **kwargs)
    expected = sec_order(keys).numpy()
    assert np.array_equal(_session(out).run(None, {'keys': keys.numpy()})[0], expected)
    # The ties are real: the eager order keeps equal keys in index order.
    assert (np.diff(expected[0, 0][:500]) > 0).all()


@needs_dynamo
def test_dynamo_exporter_static_backbone_at_a_size_not_divisible_by_32(
        detector, tmp_path, capsys):
    config, checkpoint = detector
    out = tmp_path / 'backbone_dynamo.onnx'
    code = tool.main([str(config), str(checkpoint), '--shape', '200', '232', '--exporter',
                      'dynamo', '--verify', '--out', str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert 'at 1x3x200x232' in printed and '-> OK' in printed
    import onnx
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 200, 232]


@needs_dynamo
@pytest.mark.e2e
def test_dynamo_exporter_dynamic_cluster_size_backbone(detector, tmp_path, capsys):
    """With ``cluster_size`` the cluster count follows the input size (7 clusters in
    stage 1 at 224x224, 6 at 200x232): only the dynamo exporter keeps that symbolic, in one
    file for both sizes. Slow: torch.export reasons about every symbolic size (minutes)."""
    config, checkpoint = detector
    code = tool.main([
        str(config), str(checkpoint), '--shape', '224', '224', '--dynamic', '--exporter',
        'dynamo', '--verify', '--verify-shape', '200', '232', '--out',
        str(tmp_path / 'backbone_cluster_size.onnx'), '--cfg-options',
        'model.backbone.num_clusters=None', 'model.backbone.cluster_size=500'])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert printed.count('-> OK') == 2


@needs_onnx
def test_verify_failure_exits_with_1(classifier, tmp_path, capsys):
    config, checkpoint = classifier
    code = tool.main([str(config), str(checkpoint), '--shape', '64', '64', '--verify',
                      '--atol', '1e-15', '--out', str(tmp_path / 'cls.onnx')])
    assert code == 1
    assert 'FAILED (atol 1e-15)' in capsys.readouterr().out


def _exit_code_and_error(argv, capsys):
    with pytest.raises(SystemExit) as error:
        tool.main([str(a) for a in argv])
    return error.value.code, capsys.readouterr().err


def test_missing_checkpoint_is_named(classifier, tmp_path, capsys):
    config, _ = classifier
    missing = tmp_path / 'nope.pth'
    code, err = _exit_code_and_error([config, missing, '--shape', 224, 224], capsys)
    assert code == 2
    assert f"CHECKPOINT '{missing}' does not exist" in err


@pytest.mark.parametrize('shape, message', [
    (['0', '224'], '--shape 0 224: height and width must be positive'),
    (['224'], 'argument --shape: expected 2 arguments'),
    (['224', 'x'], "argument --shape: invalid int value: 'x'"),
])
def test_bad_shape_is_rejected(classifier, shape, message, capsys):
    config, checkpoint = classifier
    code, err = _exit_code_and_error([config, checkpoint, '--shape', *shape], capsys)
    assert code == 2
    assert message in err


def test_missing_verify_image_is_named(classifier, tmp_path, capsys):
    config, checkpoint = classifier
    missing = tmp_path / 'nope.jpg'
    code, err = _exit_code_and_error(
        [config, checkpoint, '--shape', 224, 224, '--verify', '--verify-image', missing],
        capsys)
    assert code == 2
    assert f"--verify-image '{missing}' does not exist" in err


def test_verify_shape_needs_dynamic(classifier, capsys):
    config, checkpoint = classifier
    code, err = _exit_code_and_error(
        [config, checkpoint, '--shape', 224, 224, '--verify', '--verify-shape', 200, 232],
        capsys)
    assert code == 2
    assert '--verify-shape needs --dynamic' in err


def test_torchscript_refuses_dynamic_cluster_size(classifier, capsys):
    config, checkpoint = classifier
    code, err = _exit_code_and_error(
        [config, checkpoint, '--shape', 224, 224, '--dynamic', '--cfg-options',
         'model.backbone.num_clusters=None', 'model.backbone.cluster_size=98'], capsys)
    assert code == 2
    assert 'use --exporter dynamo' in err


def test_checkpoint_that_does_not_fit_is_rejected(classifier, detector, capsys):
    config, _ = classifier
    _, detector_checkpoint = detector
    code, err = _exit_code_and_error([config, detector_checkpoint, '--shape', 224, 224],
                                     capsys)
    assert code == 2
    assert 'does not fit the classifier' in err
