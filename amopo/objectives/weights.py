"""Adaptive per-dimension weights α: the generation space of each response seen as a Gaussian.

For example b and dimension k, with μ and σ the mean and unbiased std of the response's token
probabilities (see :func:`amopo.objectives.logprobs.response_token_stats`), one draw per sequence

    g_w ~ N(μ_w, σ_w²),  g_l ~ N(μ_l, σ_l²),  s_bk = g_w + g_l  (non-finite → 0)
    α_b = softmax_k(s_b)

No gradient flows through α.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch
from torch import Tensor

WEIGHT_METHODS = ("gaussian", "mean", "uniform")


def _example_seed(seed: int, epoch: int, example_id: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{epoch}:{example_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def example_noise(example_ids: Sequence[int], num_dims: int, *, seed: int, epoch: int) -> Tensor:
    """Standard normal draws z of shape [B, K, 2] (last axis: chosen, rejected).

    Row b comes from a generator seeded by a hash of (seed, epoch, example_ids[b]) alone, so an
    example's draws do not depend on which batch, rank or accumulation step it lands in; this is
    what makes gradient accumulation and multi-process training exactly match one large batch.
    """
    rows = []
    for example_id in example_ids:
        gen = torch.Generator().manual_seed(_example_seed(int(seed), int(epoch), int(example_id)))
        rows.append(torch.randn(num_dims, 2, generator=gen, dtype=torch.float32))
    if not rows:
        return torch.empty(0, num_dims, 2)
    return torch.stack(rows)


def _softmax_scores(scores: Tensor, flatten: bool) -> Tensor:
    scores = torch.where(torch.isfinite(scores), scores, torch.zeros_like(scores)).float()
    if flatten:
        return torch.softmax(scores.reshape(-1), dim=0).reshape(scores.shape)
    return torch.softmax(scores, dim=-1)


def gaussian_weights(mu_w: Tensor, sd_w: Tensor, mu_l: Tensor, sd_l: Tensor, noise: Tensor, *,
                     flatten: bool = False) -> Tensor:
    """α [B, K] from one Gaussian draw per sequence.

        g_w = μ_w + σ_w · z[..., 0],  g_l = μ_l + σ_l · z[..., 1]
        s = g_w + g_l  (NaN/inf → 0),  α = softmax_k(s)

    ``flatten=True`` softmaxes over all B·K scores at once, as the authors' released code does
    (the same as per-row at B = 1).
    """
    with torch.no_grad():
        noise = noise.to(device=mu_w.device, dtype=torch.float32)
        g_w = mu_w.detach().float() + sd_w.detach().float() * noise[..., 0]
        g_l = mu_l.detach().float() + sd_l.detach().float() * noise[..., 1]
        return _softmax_scores(g_w + g_l, flatten)


def mean_weights(mu_w: Tensor, mu_l: Tensor, *, flatten: bool = False) -> Tensor:
    """Ablation without sampling: α = softmax_k(μ_w + μ_l), non-finite scores → 0."""
    with torch.no_grad():
        return _softmax_scores(mu_w.detach().float() + mu_l.detach().float(), flatten)


def uniform_weights(shape: Sequence[int], *, device: torch.device | str | None = None) -> Tensor:
    """Ablation: α_bk = 1/K for a shape (B, K)."""
    return torch.full(tuple(shape), 1.0 / shape[-1], device=device)


def adaptive_weights(method: str, *, mu_w: Tensor, mu_l: Tensor, sd_w: Tensor | None = None,
                     sd_l: Tensor | None = None, noise: Tensor | None = None,
                     flatten: bool = False) -> Tensor:
    """α [B, K] by ``method``: "gaussian" (the paper), "mean" or "uniform" (ablations)."""
    if method == "gaussian":
        if sd_w is None or sd_l is None or noise is None:
            raise ValueError("adaptive weights 'gaussian' need sd_w, sd_l and noise")
        return gaussian_weights(mu_w, sd_w, mu_l, sd_l, noise, flatten=flatten)
    if method == "mean":
        return mean_weights(mu_w, mu_l, flatten=flatten)
    if method == "uniform":
        return uniform_weights(mu_w.shape, device=mu_w.device)
    raise ValueError(f"unknown adaptive weight method {method!r}; allowed: {', '.join(WEIGHT_METHODS)}")
