"""Preference losses. Each returns per-example values (no reduction) so a trainer can sum and
scale them exactly across micro-batches and processes."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def implicit_rewards(avg: Tensor, beta: float) -> Tensor:
    """r(y) = β · ā(y), the reward AMoPO and SimPO optimise implicitly."""
    return beta * avg


def simpo_loss(avg_w: Tensor, avg_l: Tensor, *, beta: float, gamma: float) -> Tensor:
    """ℓ = −log σ( β · (ā_w − ā_l) − γ ), elementwise."""
    return -F.logsigmoid(beta * (avg_w - avg_l) - gamma)


def amopo_loss(avg_w: Tensor, avg_l: Tensor, alpha: Tensor, *, beta: float,
               gamma: float) -> tuple[Tensor, Tensor]:
    """AMoPO loss for [B, K] length-normalised log-probs and weights α [B, K].

        ℓ_bk = −log σ( β · (ā_w,bk − ā_l,bk) − γ )
        per_example_b = (1/K) Σ_k α_bk · ℓ_bk

    so mean_b(per_example) = mean_{b,k}(α · ℓ), the released code's reduction.
    Returns (per_example [B], per_dim ℓ [B, K]).
    """
    per_dim = simpo_loss(avg_w, avg_l, beta=beta, gamma=gamma)
    per_example = (alpha.detach() * per_dim).mean(dim=-1)
    return per_example, per_dim


def dpo_loss(logp_w: Tensor, logp_l: Tensor, ref_logp_w: Tensor, ref_logp_l: Tensor, *,
             beta: float) -> Tensor:
    """ℓ = −log σ( β · [(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))] ),
    with summed sequence log-probabilities."""
    return -F.logsigmoid(beta * ((logp_w - ref_logp_w) - (logp_l - ref_logp_l)))


def modpo_loss(logp_w: Tensor, logp_l: Tensor, ref_logp_w: Tensor, ref_logp_l: Tensor,
               margin_gap: Tensor, *, beta: float, weight: float) -> Tensor:
    """MODPO (Zhou et al., 2024) with Δ = log π − log π_ref (summed):

        ℓ = −log σ( (β/w_k) · (Δ_w − Δ_l) − (1/w_k) · margin_gap )
        margin_gap = w_{−k}ᵀ (r_{−k}(y_w) − r_{−k}(y_l))

    w_k = ``weight`` ∈ (0, 1] weighs the preference being optimised; r_{−k} are the OTHER
    objectives' rewards, w_{−k} their weights (:mod:`amopo.train.modpo`). w_k = 1 is plain DPO.
    """
    if not (isinstance(weight, (int, float)) and 0.0 < weight <= 1.0):
        raise ValueError(f"modpo weight must be in (0, 1], got {weight!r}")
    logits = (beta * ((logp_w - ref_logp_w) - (logp_l - ref_logp_l)) - margin_gap) / weight
    return -F.logsigmoid(logits)


def sft_loss(avg_w: Tensor) -> Tensor:
    """ℓ_SFT = −ā(y_w), the optional supervised term on chosen responses."""
    return -avg_w
