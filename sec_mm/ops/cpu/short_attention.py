"""Dense attention over many short sequences as explicit ``bmm`` + softmax + ``bmm``.

``scaled_dot_product_attention`` on CPU runs its flash kernel, whose blocked loop is built for
long sequences: for the thousands of ~100-token clusters of a SECViT stage it spends more time
in per-block overhead than in arithmetic. Explicit matrix products are faster there, provided
the score matrices are produced a cache-sized chunk of sequences at a time (a score tensor of
tens of MB costs more in page faults than in arithmetic). For longer sequences the flash
kernel wins.

Measured against the flash kernel (benchmarks/results.md, "Dispatch kernels"; torch 2.14,
2 threads, medians of 21 interleaved runs), forward and backward of ``(B, sequences, L, 32)``:
SECViT-T's clusters at batch 8, ``(8, 64, 98, 32)`` 28.1 vs. 38.4 ms (1.37x), ``(8, 32, 98,
32)`` 15.3 vs. 19.7 ms (1.29x), ``(8, 16, 98, 32)`` 7.8 vs. 9.6 ms (1.23x), ``(8, 16, 49,
32)`` 2.4 vs. 3.1 ms (1.31x); ``(8, 64, 128, 32)`` 41.5 vs. 47.4 ms (1.14x); from 196 keys on
the flash kernel is faster (``(1, 128, 196, 32)`` 0.95x, ``(1, 64, 256, 32)`` 0.81x).
"""
from typing import Iterator, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ['MAX_LENGTH', 'supports', 'attention']

#: Longest key sequence computed with explicit matrix products (see the measurement above).
MAX_LENGTH = 128

# Score matrices computed per chunk of sequences: about 2 MB, so that they stay in cache.
_CHUNK_BYTES = 2 * 1024 * 1024


def supports(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """CPU float32/float64 q, k, v of one dtype and leading shape, at most
    :data:`MAX_LENGTH` keys."""
    return (q.device.type == 'cpu' and q.dtype in (torch.float32, torch.float64)
            and q.dtype == k.dtype == v.dtype and k.shape[-2] <= MAX_LENGTH
            and q.shape[:-2] == k.shape[:-2] == v.shape[:-2])


def _chunks(q: Tensor, k: Tensor) -> Iterator[slice]:
    """Slices of the sequence axis whose score matrices take about ``_CHUNK_BYTES``."""
    num_sequences, scores = q.shape[0], q.shape[1] * k.shape[1] * q.element_size()
    step = max(1, _CHUNK_BYTES // max(scores, 1))
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


def attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """``F.scaled_dot_product_attention(q, k, v, scale=scale)``.

    Args:
        q (Tensor): ``(..., L_q, d)``.
        k (Tensor): ``(..., L_k, d)``, the same leading dims.
        v (Tensor): ``(..., L_k, d_v)``.
        scale (float): Logit scale.

    Returns:
        Tensor: ``(..., L_q, d_v)``.
    """
    lead = q.shape[:-2]
    out = _ExplicitAttention.apply(q.reshape((-1, ) + q.shape[-2:]),
                                   k.reshape((-1, ) + k.shape[-2:]),
                                   v.reshape((-1, ) + v.shape[-2:]), scale)
    return out.view(lead + out.shape[-2:])
