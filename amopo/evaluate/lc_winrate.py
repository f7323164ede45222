"""Length-controlled win rate: the GLM of AlpacaEval 2 (Dubois et al., 2024, "Length-Controlled
AlpacaEval: A Simple Way to Debias Automatic Evaluators", arXiv:2404.04475).

The judge's preference for the model on instruction i is modelled as

    logit P(model ≻ baseline | i) = θ + φ · tanh(Δ_i / sd(Δ)) [+ ψ · d_i]

with Δ_i = len(model output) − len(baseline output) in characters, d_i an optional instruction
difficulty, and the preference p_i ∈ [0, 1] as a soft label. The length-controlled win rate is the
prediction with the length term removed, i.e. what the judge would prefer were both outputs equally
long:

    LC = (1/n) Σ_i σ(θ + ψ · d_i)        (= σ(θ) without a difficulty term)

This is the published formula ``np.tanh(std_delta_len) + instruction_difficulty +
not_gamed_baseline - 1`` (no separate intercept; the ``not_gamed_baseline`` indicator is θ).

Where this differs from the ``alpaca-eval`` package, and why:
- Fitting: maximum likelihood with Firth's bias-reducing penalty (Jeffreys prior),
      ℓ*(w) = Σ_i [p_i log σ(x_i·w) + (1 − p_i) log σ(−x_i·w)] + ½ log det(Xᵀ W X),
  instead of a cross-validated L1 penalty. A judge that decides by length alone gives verdicts
  that length separates perfectly; the unpenalised estimate then does not exist and a CV-chosen
  penalty lets it drift, while Firth's stays finite, needs no tuning, and reduces the O(1/n) bias
  that matters with a hundred instructions.
- No regularisation towards the "gamed" baselines and no instruction difficulty by default: both
  are estimated from AlpacaEval's own leaderboard annotations (hub files). ``difficulty`` is used
  when the instruction set carries it.
- Standard error: a bootstrap over instructions (refitting the GLM each time), not the standard
  error of the predictions, which is zero without a difficulty term.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

MAX_NEWTON_STEPS = 200
MAX_STEP = 5.0


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def fit_firth_logistic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients w maximising the Firth-penalised log-likelihood above for soft labels y ∈ [0, 1]
    (no intercept is added: put a column of ones in ``x``)."""
    w = np.zeros(x.shape[1])
    for _ in range(MAX_NEWTON_STEPS):
        p = _sigmoid(x @ w)
        weight = p * (1.0 - p)
        info = (x.T * weight) @ x + 1e-10 * np.eye(x.shape[1])
        info_inv = np.linalg.inv(info)
        leverage = np.einsum("ij,jk,ik->i", x, info_inv, x) * weight
        score = x.T @ (y - p + leverage * (0.5 - p))
        step = info_inv @ score
        largest = np.abs(step).max()
        if largest > MAX_STEP:  # damped Newton: keep early steps from overshooting into saturation
            step *= MAX_STEP / largest
        w = w + step
        if largest < 1e-9:
            break
    return w


def _design(delta: np.ndarray, difficulty: np.ndarray | None) -> np.ndarray:
    sd = delta.std(ddof=1) if len(delta) > 1 else 0.0
    length = np.tanh(delta / sd) if sd > 0 and math.isfinite(sd) else np.zeros_like(delta)
    columns = [np.ones_like(delta), length]
    if difficulty is not None:
        columns.append(difficulty)
    return np.stack(columns, axis=1)


def _lc(delta: np.ndarray, y: np.ndarray, difficulty: np.ndarray | None) -> tuple[float, np.ndarray]:
    w = fit_firth_logistic(_design(delta, difficulty), y)
    no_length = w[0] + (w[2] * difficulty if difficulty is not None else 0.0)
    return float(np.mean(_sigmoid(np.broadcast_to(no_length, delta.shape)))), w


def length_controlled_win_rate(preferences: Sequence[float | None], model_lengths: Sequence[float],
                               baseline_lengths: Sequence[float], *,
                               difficulty: Sequence[float] | None = None, bootstrap: int = 200,
                               seed: int = 0) -> dict[str, float]:
    """LC win rate (fraction), its bootstrap standard error, and the fitted coefficients.
    Instructions without a verdict (``None``) are left out; fewer than 3 judged gives NaN."""
    keep = [i for i, p in enumerate(preferences) if p is not None and not math.isnan(p)]
    nan = {"lc": math.nan, "lc_se": math.nan, "intercept": math.nan, "length_coef": math.nan,
           "n": float(len(keep))}
    if len(keep) < 3:
        return nan
    y = np.array([preferences[i] for i in keep], dtype=float)
    delta = np.array([model_lengths[i] - baseline_lengths[i] for i in keep], dtype=float)
    diff = np.array([difficulty[i] for i in keep], dtype=float) if difficulty is not None else None
    lc, w = _lc(delta, y, diff)

    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(bootstrap):
        idx = rng.integers(0, len(y), len(y))
        draws.append(_lc(delta[idx], y[idx], diff[idx] if diff is not None else None)[0])
    se = float(np.std(draws, ddof=1)) if len(draws) > 1 else math.nan
    return {"lc": lc, "lc_se": se, "intercept": float(w[0]), "length_coef": float(w[1]), "n": float(len(y))}
