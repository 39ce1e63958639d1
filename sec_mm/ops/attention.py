"""Dense attention over many short sequences, as SEC's clusters give it.

``scaled_dot_product_attention`` on CPU runs its flash kernel, whose blocked loop is built for
long sequences: for the thousands of ~100-token clusters of a SECViT stage it spends more time
in per-block overhead than in arithmetic. Explicit ``bmm`` + softmax + ``bmm`` is faster there
(1.2-1.7x forward and backward at 2 threads, within 5% at 1 thread), provided that the
score matrices are produced a cache-sized chunk at a time: a score tensor of tens of MB costs
more in page faults than in arithmetic. For longer sequences the flash kernel wins and is used.

Pure PyTorch on purpose: nothing here knows about mmengine, mmdet, mmseg or mmpretrain.
"""
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .compat import is_compiling

__all__ = ['dot_product_attention', 'EXPLICIT_MAX_LENGTH']

#: Longest key sequence that CPU attention computes with explicit matrix products. Measured on
#: a 2-core AVX-512 CPU (head dims 32-64): explicit is 1.2-1.7x faster than the flash kernel up
#: to 128 tokens, about even at 196 and slower from 256 on.
EXPLICIT_MAX_LENGTH = 128

# Score matrices computed per chunk of sequences: about 2 MB, so that they stay in cache.
_CHUNK_BYTES = 2 * 1024 * 1024


def _chunks(q: Tensor, k: Tensor) -> Iterator[slice]:
    """Slices of the sequence axis whose score matrices take about ``_CHUNK_BYTES``."""
    num_sequences, scores = q.shape[0], q.shape[1] * k.shape[1] * q.element_size()
    step = max(1, _CHUNK_BYTES // scores)
    for start in range(0, num_sequences, step):
        yield slice(start, min(num_sequences, start + step))


def _probabilities(q: Tensor, k: Tensor, scale: float) -> Tensor:
    """``softmax(q k^T * scale)`` of ``(G, L, d)`` chunks."""
    logits = torch.baddbmm(q.new_empty(()), q, k.transpose(1, 2), beta=0, alpha=scale)
    return logits.softmax(dim=-1)


class _ExplicitAttention(torch.autograd.Function):
    """``softmax(q k^T * scale) v`` of ``(G, L, d)`` tensors, chunk by chunk.

    Saves what the flash kernel saves (inputs and output, no probabilities); the backward pass
    recomputes each chunk's probabilities, as flash attention does.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        out = q.new_empty(q.shape[:2] + v.shape[2:])
        for part in _chunks(q, k):
            torch.bmm(_probabilities(q[part], k[part], scale), v[part], out=out[part])
        ctx.save_for_backward(q, k, v, out)
        ctx.scale = scale
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> Tuple[Tensor, Tensor, Tensor, None]:
        q, k, v, out = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        for part in _chunks(q, k):
            probs = _probabilities(q[part], k[part], ctx.scale)
            torch.bmm(probs.transpose(1, 2), grad_out[part], out=grad_v[part])
            # Softmax backward: dS = P * (dP - rowsum(dO * O)).
            row_dot = (grad_out[part] * out[part]).sum(dim=-1, keepdim=True)
            grad_logits = torch.bmm(grad_out[part], v[part].transpose(1, 2))
            grad_logits = grad_logits.sub_(row_dot).mul_(probs)
            torch.bmm(grad_logits, k[part], out=grad_q[part])
            torch.bmm(grad_logits.transpose(1, 2), q[part], out=grad_k[part])
        return grad_q.mul_(ctx.scale), grad_k.mul_(ctx.scale), grad_v, None


def _use_explicit(q: Tensor, k: Tensor, v: Tensor) -> bool:
    if q.numel() == 0 or k.numel() == 0:
        # Nothing to compute (e.g. batch size 0); the CPU flash kernel's backward aborts the
        # process on empty inputs.
        return q.shape[:-2] == k.shape[:-2] == v.shape[:-2]
    return (q.device.type == 'cpu' and q.dtype in (torch.float32, torch.float64)
            and q.dtype == k.dtype == v.dtype and k.shape[-2] <= EXPLICIT_MAX_LENGTH
            and q.shape[:-2] == k.shape[:-2] == v.shape[:-2]
            # Tracers and compilers see the standard op (FLOP counting handles it;
            # inductor fuses it).
            and not torch.jit.is_tracing() and not is_compiling())


def dot_product_attention(q: Tensor, k: Tensor, v: Tensor,
                          scale: Optional[float] = None) -> Tensor:
    """``softmax(q k^T * scale) v``, the result of ``F.scaled_dot_product_attention``.

    On CPU in float32/float64 with key sequences of at most :data:`EXPLICIT_MAX_LENGTH` tokens
    it uses explicit matrix products a chunk of sequences at a time; everywhere else (GPUs,
    half precision, longer sequences, tracing, ``torch.compile``) it calls
    ``F.scaled_dot_product_attention`` and its fused kernels. Both give the same values up to
    float rounding, and the same gradients.

    Args:
        q (Tensor): ``(..., L_q, d)``.
        k (Tensor): ``(..., L_k, d)``, the same leading dims.
        v (Tensor): ``(..., L_k, d_v)``.
        scale (float, optional): Logit scale; defaults to ``d ** -0.5``.

    Returns:
        Tensor: ``(..., L_q, d_v)``.
    """
    if scale is None:
        scale = q.shape[-1]**-0.5
    if not _use_explicit(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    lead = q.shape[:-2]
    out = _ExplicitAttention.apply(q.reshape((-1, ) + q.shape[-2:]),
                                   k.reshape((-1, ) + k.shape[-2:]),
                                   v.reshape((-1, ) + v.shape[-2:]), scale)
    return out.view(lead + out.shape[-2:])
