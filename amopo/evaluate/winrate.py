"""Pairwise win rate of a model against a baseline, from per-instruction preferences.

A preference p_i ∈ [0, 1] is the judged probability that the model's output to instruction i is
better than the baseline's (1 = model wins, 0 = baseline wins, 0.5 = tie), already averaged over
the two presentation orders. Instructions whose verdicts were all unparseable carry ``None`` and are
left out.

    raw      = (1/n) Σ_i p_i
    raw_se   = sd(p) / √n                         (sample sd, ddof = 1: AlpacaEval's "standard_error")
    discrete = (wins + ties/2) / n                 win: p_i > 1/2, tie: p_i = 1/2
"""

from __future__ import annotations

import math
from typing import Sequence


def judged(preferences: Sequence[float | None]) -> list[float]:
    """The preferences that carry a verdict."""
    return [float(p) for p in preferences if p is not None and not math.isnan(p)]


def mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sd with ddof = 1); NaN where undefined."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def win_rate(preferences: Sequence[float | None]) -> dict[str, float]:
    """Raw and discrete win rate with counts (fractions in [0, 1], not percent)."""
    p = judged(preferences)
    raw, se = mean_and_se(p)
    wins = sum(v > 0.5 for v in p)
    losses = sum(v < 0.5 for v in p)
    ties = len(p) - wins - losses
    discrete = (wins + 0.5 * ties) / len(p) if p else math.nan
    return {"raw": raw, "raw_se": se, "discrete": discrete, "wins": float(wins), "losses": float(losses),
            "ties": float(ties), "n": float(len(p)), "unjudged": float(len(preferences) - len(p))}


def combine_orders(model_first: float | None, baseline_first: float | None) -> float | None:
    """The preference for the model from its two verdicts: P(model better) when shown first and
    when shown second; the mean of those that parsed (position bias cancels when both did)."""
    parsed = [v for v in (model_first, baseline_first) if v is not None]
    return sum(parsed) / len(parsed) if parsed else None
