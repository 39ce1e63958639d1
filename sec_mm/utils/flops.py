"""FLOP counting for SEC models on top of mmengine's jit-based analysis.

mmengine's :class:`~mmengine.analysis.FlopAnalyzer` (a port of fvcore's) counts one fused
multiply-add as one FLOP, but has no handle for ``aten::scaled_dot_product_attention``, the op
every SEC attention layer (and mmpretrain's ``MultiheadAttention``) runs its matrix products
in, so it silently skips attention. :data:`ATTENTION_FLOP_HANDLES` adds that op: ``q k^T`` and
``attn v`` inside every cluster, ``L_q * L_k * (d + d_v)`` multiply-adds per batch item and
head. The softmax, the clustering sort and the gathers are element-wise or index work and
are not counted, as fvcore counts no element-wise op.

The helpers here turn a built OpenMMLab model (an mmpretrain classifier, an mmdet detector or
an mmseg segmentor) and an image size into a dummy batch, run the model's own data
preprocessor on it and analyse the ``mode='tensor'`` forward, which is what mmdet's and
mmseg's ``get_flops.py`` measure. Detectors follow the convention behind published detector
FLOPs (mmdet 2.x ``forward_dummy``, used by Swin and the SEC papers): box heads on all 1000
RPN proposals, mask heads on the first 100. mmdet 3.x's tensor mode does that for
``StandardRoIHead``; for cascade heads it runs every stage's mask head on all proposals (10x
the mask cost), so :class:`CascadeTensorForward` counts them the 2.x way.
"""
from dataclasses import dataclass
from math import prod
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.analysis.jit_handles import get_shape

__all__ = [
    'ATTENTION_OP', 'ATTENTION_FLOP_HANDLES', 'MASK_ROIS', 'sdpa_flop_jit', 'flop_analyzer',
    'dummy_batch', 'TensorModeForward', 'CascadeTensorForward', 'Complexity',
    'model_complexity'
]

ATTENTION_OP = 'aten::scaled_dot_product_attention'
#: Proposals whose masks count (mmdet's ``StandardRoIHead.forward`` and 2.x ``forward_dummy``).
MASK_ROIS = 100


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """FLOPs (multiply-adds) of one ``scaled_dot_product_attention`` call.

    ``q (..., L_q, d)``, ``k (..., L_k, d)``, ``v (..., L_k, d_v)``: ``q k^T`` costs
    ``L_q * L_k * d`` and ``attn v`` ``L_q * L_k * d_v`` multiply-adds for every index of the
    leading (batch, head, cluster) axes. Causal masking is not discounted.
    """
    q_shape, k_shape, v_shape = (get_shape(value) for value in inputs[:3])
    if q_shape is None or k_shape is None or v_shape is None:
        raise ValueError('scaled_dot_product_attention was traced without complete input '
                         'shapes; FLOPs cannot be counted.')
    *batch, q_len, dims = q_shape
    return prod(batch) * q_len * k_shape[-2] * (dims + v_shape[-1])


#: Handles to add to a :class:`FlopAnalyzer` so that attention's matrix products count.
ATTENTION_FLOP_HANDLES = {ATTENTION_OP: sdpa_flop_jit}


def flop_analyzer(model: nn.Module, inputs: Tuple[Any, ...],
                  count_attention: bool = True) -> FlopAnalyzer:
    """A quiet :class:`FlopAnalyzer` of ``model(*inputs)``.

    Args:
        model (nn.Module): The model (in the mode, train or eval, to analyse).
        inputs (tuple): Positional inputs of ``model.forward``.
        count_attention (bool): Count ``scaled_dot_product_attention`` (SEC attention's
            ``q k^T`` and ``attn v``). False reproduces the stock mmengine/fvcore count.

    Returns:
        FlopAnalyzer: Query it with ``total()``, ``by_operator()``, ``by_module()``.
    """
    analyzer = FlopAnalyzer(model, inputs)
    if count_attention:
        analyzer.set_op_handle(**ATTENTION_FLOP_HANDLES)
    # Element-wise ops are uncounted by design; listing them on every run is noise.
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    return analyzer


def _codebase(model: nn.Module) -> str:
    return type(model).__module__.split('.')[0]


def _data_sample(codebase: str, height: int, width: int):
    meta = dict(img_shape=(height, width), ori_shape=(height, width),
                pad_shape=(height, width), scale_factor=(1., 1.))
    if codebase == 'mmdet':
        from mmdet.structures import DetDataSample
        return DetDataSample(metainfo=meta)
    if codebase == 'mmseg':
        from mmseg.structures import SegDataSample
        return SegDataSample(metainfo=meta)
    if codebase == 'mmpretrain':
        from mmpretrain.structures import DataSample
        return DataSample(metainfo=meta)
    raise TypeError(f'FLOP counting supports mmpretrain, mmdet and mmseg models; got a '
                    f'model from {codebase!r}.')


def dummy_batch(model: nn.Module, height: int, width: int) -> Dict[str, Any]:
    """One random ``height x width`` image, preprocessed by the model's data preprocessor.

    The preprocessor normalises and pads as in testing (e.g. mmdet pads to a multiple of 32
    and records ``batch_input_shape``), so the analysed input is what inference would see.

    Returns:
        dict: ``inputs`` ``(1, 3, H', W')`` and ``data_samples`` (a list of one sample).
    """
    if height < 1 or width < 1:
        raise ValueError(f'The input size must be positive, got {height}x{width}.')
    codebase = _codebase(model)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
    data = {'inputs': [image], 'data_samples': [_data_sample(codebase, height, width)]}
    return model.data_preprocessor(data, training=False)


class TensorModeForward(nn.Module):
    """``model(inputs, data_samples, mode='tensor')`` with the samples bound, for tracing.

    Args:
        model (nn.Module): An OpenMMLab ``BaseModel``.
        data_samples (list, optional): Samples whose metainfo the forward needs (detectors).
    """

    def __init__(self, model: nn.Module, data_samples: Optional[list] = None) -> None:
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, inputs: torch.Tensor):
        return self.model(inputs, self.data_samples, mode='tensor')


class CascadeTensorForward(TensorModeForward):
    """A cascade detector's backbone, neck, RPN and heads as published FLOPs count them.

    Every stage's box head runs on all RPN proposals and every stage's mask head on the first
    :data:`MASK_ROIS` proposals, as in mmdet 2.x ``CascadeRoIHead.forward_dummy``.
    """

    def forward(self, inputs: torch.Tensor):
        from mmdet.structures.bbox import bbox2roi
        detector = self.model
        feats = detector.extract_feat(inputs)
        proposals = detector.rpn_head.predict(feats, self.data_samples, rescale=False)
        rois = bbox2roi([p.bboxes for p in proposals])
        head = detector.roi_head
        outs = []
        for stage in range(head.num_stages):
            boxes = head._bbox_forward(stage, feats, rois)
            outs += [boxes['cls_score'], boxes['bbox_pred']]
        if head.with_mask:
            for stage in range(head.num_stages):
                outs.append(head._mask_forward(stage, feats, rois[:MASK_ROIS])['mask_preds'])
        return tuple(outs)


def _tensor_forward(model: nn.Module, data_samples: list) -> TensorModeForward:
    if _codebase(model) == 'mmdet':
        from mmdet.models.roi_heads import CascadeRoIHead
        if isinstance(getattr(model, 'roi_head', None), CascadeRoIHead):
            return CascadeTensorForward(model, data_samples)
    return TensorModeForward(model, data_samples)


@dataclass
class Complexity:
    """FLOPs (multiply-adds) and parameters of a model at one input size."""
    flops: int
    attention_flops: int
    params: int
    input_shape: Tuple[int, int]
    analyzer: FlopAnalyzer

    @property
    def flops_without_attention(self) -> int:
        """What the stock mmengine/fvcore counter reports (attention skipped)."""
        return self.flops - self.attention_flops


def model_complexity(model: nn.Module, height: int, width: int) -> Complexity:
    """FLOPs and parameters of an mmpretrain/mmdet/mmseg model on one image.

    Args:
        model (nn.Module): A built classifier, detector or segmentor. It is put in eval mode.
        height (int): Image height before the model's own padding.
        width (int): Image width.

    Returns:
        Complexity: FLOPs including SEC attention, the attention part, parameter count, the
        analysed (padded) input size and the analyzer for per-module tables.
    """
    model.eval()
    data = dummy_batch(model, height, width)
    inputs = data['inputs']
    wrapper = _tensor_forward(model, data['data_samples'])
    with torch.no_grad():
        analyzer = flop_analyzer(wrapper, (inputs, ))
        flops = analyzer.total()
        attention = analyzer.by_operator().get(ATTENTION_OP.split('::')[-1], 0)
    return Complexity(
        flops=int(flops), attention_flops=int(attention), params=parameter_count(model)[''],
        input_shape=tuple(inputs.shape[-2:]), analyzer=analyzer)
