"""Response-token log-probabilities straight from hidden states and the output head, in chunks.

The plain path materialises logits [N, T, V] and their fp32 log-softmax; at a 49k-150k vocabulary
that buffer dominates memory. Here only the hidden states h_i of positions that predict a response
token are projected, a chunk of rows at a time, and nothing of size V outlives its chunk:

    forward   z = W h_i + b (fp32),   lse_i = logsumexp_v z_v,   logp_i = z_{y_i} − lse_i
    backward  ∂logp_i/∂z = onehot(y_i) − softmax(z)      (z recomputed per chunk from h_i)
              ∂h_i = g_i (onehot − softmax)ᵀ W,   ∂W = Σ_i g_i (onehot − softmax) h_iᵀ,   ∂b = Σ_i g_i (onehot − softmax)

Gradients are exact (the same softmax, recomputed); only the per-row logsumexp is kept between
forward and backward. :func:`segment_stats` then reduces the per-token values to the per-sequence
statistics of :class:`amopo.objectives.logprobs.SeqStats`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from amopo.objectives.autocast import autocast_aware
from amopo.objectives.logprobs import SeqStats

# Rows per chunk: about 64 MiB of fp32 logits at a 49k vocabulary; tunable per call.
DEFAULT_CHUNK_ELEMENTS = 1 << 24


def default_chunk_rows(vocab_size: int) -> int:
    return max(1, DEFAULT_CHUNK_ELEMENTS // max(1, vocab_size))


def _chunk_logits(h: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    # The projection runs in the weights' dtype (bf16 on GPU under autocast-free mixed precision),
    # the softmax in fp32, matching ``model(...).logits.float()`` of the plain path.
    return F.linear(h.to(weight.dtype), weight, bias).float()


class _ChunkedTokenLogprob(torch.autograd.Function):
    """logp [N] = log softmax(W h + b)[y] per row, computed and differentiated chunk by chunk."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor, chunk: int):
        n = hidden.shape[0]
        logp = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
        for lo in range(0, n, chunk):
            z = _chunk_logits(hidden[lo:lo + chunk], weight, bias)
            lse[lo:lo + chunk] = torch.logsumexp(z, dim=-1)
            logp[lo:lo + chunk] = z.gather(-1, labels[lo:lo + chunk].unsqueeze(-1)).squeeze(-1) - lse[lo:lo + chunk]
        ctx.save_for_backward(hidden, weight, bias, labels, lse)
        ctx.chunk = chunk
        return logp

    @staticmethod
    def backward(ctx, grad_logp: Tensor):
        hidden, weight, bias, labels, lse = ctx.saved_tensors
        chunk = ctx.chunk
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        grad_logp = grad_logp.float()
        for lo in range(0, hidden.shape[0], chunk):
            h = hidden[lo:lo + chunk]
            g = grad_logp[lo:lo + chunk]
            z = _chunk_logits(h, weight, bias)
            # dz = g · (onehot(y) − softmax(z)), built in place in the recomputed logits buffer.
            dz = torch.exp_(z.sub_(lse[lo:lo + chunk].unsqueeze(-1))).mul_(-g.unsqueeze(-1))
            dz.scatter_add_(-1, labels[lo:lo + chunk].unsqueeze(-1), g.unsqueeze(-1))
            if need_h:
                grad_h[lo:lo + chunk] = (dz.to(weight.dtype) @ weight).to(hidden.dtype)
            if need_w:
                grad_w.addmm_(dz.t(), h.float())
            if need_b:
                grad_b += dz.sum(0)
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        if grad_b is not None:
            grad_b = grad_b.to(bias.dtype)
        return grad_h, grad_w, grad_b, None, None


_chunked_token_logprob = autocast_aware(_ChunkedTokenLogprob)


def chunked_token_logprobs(hidden: Tensor, weight: Tensor, labels: Tensor, bias: Tensor | None = None, *,
                           chunk_rows: int | None = None) -> Tensor:
    """log π(y_i | h_i) for rows ``hidden`` [N, H], head ``weight`` [V, H] (+ ``bias`` [V]) and
    ``labels`` [N]; fp32 [N], differentiable with respect to ``hidden``, ``weight`` and ``bias``."""
    chunk = chunk_rows or default_chunk_rows(weight.shape[0])
    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32) + 0.0 * weight.sum()
    return _chunked_token_logprob(hidden, weight, bias, labels, int(chunk))


def segment_stats(logp: Tensor, seq_index: Tensor, num_seqs: int) -> SeqStats:
    """Per-sequence :class:`SeqStats` from per-token log-probs ``logp`` [N] whose token i belongs
    to sequence ``seq_index[i]`` (0 ≤ seq_index < num_seqs). Same definitions as
    :func:`amopo.objectives.logprobs.response_token_stats`: logp_sum with gradient, n_tokens, and
    the detached mean and unbiased std of p = exp(logp)."""
    zeros = torch.zeros(num_seqs, dtype=torch.float32, device=logp.device)
    logp_sum = zeros.index_add(0, seq_index, logp)
    n_tokens = zeros.index_add(0, seq_index, torch.ones_like(logp, dtype=torch.float32))
    with torch.no_grad():
        p = torch.exp(logp.detach())
        prob_mean = zeros.index_add(0, seq_index, p) / n_tokens
        centred = p - prob_mean[seq_index]
        prob_std = torch.sqrt(zeros.index_add(0, seq_index, centred.pow(2)) / (n_tokens - 1))
    return SeqStats(logp_sum, n_tokens, prob_mean, prob_std)
