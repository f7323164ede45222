"""Per-sequence statistics of a causal LM's log-probabilities over response tokens.

One pass over the logits gives both what the loss needs (the summed log-probability, with
gradient) and what the adaptive weights need (mean and std of the token probabilities, detached).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class SeqStats(NamedTuple):
    """Per-sequence statistics, each of shape [N]."""

    logp_sum: Tensor
    n_tokens: Tensor
    prob_mean: Tensor
    prob_std: Tensor


def response_token_stats(logits: Tensor, labels: Tensor, ignore_index: int = -100) -> SeqStats:
    """Statistics of the response tokens of each sequence.

    ``logits`` is [N, T, V] and ``labels`` [N, T] aligned with the input ids; position t of the
    logits predicts label t+1. Tokens whose label is ``ignore_index`` (prompt, padding) are
    skipped. With logp_t = log π(y_t | x, y_<t) in fp32 and p_t = exp(logp_t):

        logp_sum  = Σ_t logp_t                              (differentiable)
        n_tokens  = |y|                                     (float)
        prob_mean = (1/|y|) Σ_t p_t                         (detached)
        prob_std  = sqrt( Σ_t (p_t − prob_mean)² / (|y|−1) )  (detached; NaN when |y| = 1)
    """
    logits = logits[:, :-1]
    labels = labels[:, 1:]
    mask = labels != ignore_index
    safe_labels = torch.where(mask, labels, torch.zeros_like(labels))
    logp = F.log_softmax(logits.float(), dim=-1).gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
    logp = torch.where(mask, logp, torch.zeros_like(logp))

    maskf = mask.to(logp.dtype)
    n_tokens = maskf.sum(-1)
    logp_sum = logp.sum(-1)

    with torch.no_grad():
        p = torch.exp(logp.detach()) * maskf
        prob_mean = p.sum(-1) / n_tokens
        centred = (p - prob_mean.unsqueeze(-1)) * maskf
        prob_std = torch.sqrt(centred.pow(2).sum(-1) / (n_tokens - 1))
    return SeqStats(logp_sum, n_tokens, prob_mean, prob_std)


def average_logprob(stats: SeqStats) -> Tensor:
    """Length-normalised log-probability ā(y) = logp_sum / |y| (|y| clamped at 1)."""
    return stats.logp_sum / stats.n_tokens.clamp(min=1)
