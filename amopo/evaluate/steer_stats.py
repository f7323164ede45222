"""Statistics of steerability: do judged ratings follow the requested level, and does the model's
preference between two responses follow the request?

Ratings. Each point is (x, y): x the level requested on a dimension, y the judge's rating of the
answer, over every instruction i and requested level (unparseable ratings left out).

    slope   b    = Σ (x − x̄)(y − ȳ) / Σ (x − x̄)²                  least squares of y on x
    se(b)        = √( s² / Σ (x − x̄)² ),  s² = Σ (y − ȳ − b (x − x̄))² / (n − 2)     (OLS)
    Spearman ρ   = Pearson correlation of the average ranks of x and of y (tied values share a rank)
    se(ρ)        = sd (ddof 1) of ρ over ``resamples`` bootstrap resamples of the instructions, drawn
                   with replacement with a seeded generator; an instruction's points travel together

When every instruction carries every level, an instruction's own effect on its ratings cancels in b
and only inflates s², so se(b) errs on the large side. A model that ignores the request answers
alike at every level (y_{i,x} = y_i): then b = 0, and ρ = 0 exactly when every instruction carries
every level (the rank covariance sums, per instruction, deviations of x's ranks that cancel).

Steering accuracy. For a held-out pair whose responses differ on dimension k, h is the response
scored higher on k and l the other; with ā(y | v) the mean response-token log-probability:

    follows = [ā(h | high level of k) > ā(l | high level)]  and  [ā(l | low level) > ā(h | low level)]
    rate  p = (pairs that follow) / n,   se(p) = √( p (1 − p) / n )        (binomial)

A model that ignores the request ranks h and l alike under both requests, so it never follows:
p = 0 (a preference that flipped by chance would give 1/4).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from amopo.evaluate.winrate import mean_and_se

Point = tuple[float, float]  # (requested level, rating)


def ols_slope(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope of y on x and its OLS standard error (NaN where undefined)."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(xs)
    if n < 2:
        return math.nan, math.nan
    dx, dy = xs - xs.mean(), ys - ys.mean()
    sxx = float(dx @ dx)
    if sxx == 0.0:
        return math.nan, math.nan
    slope = float(dx @ dy) / sxx
    if n < 3:
        return slope, math.nan
    residual = dy - slope * dx
    return slope, math.sqrt(float(residual @ residual) / (n - 2) / sxx)


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n of ``values``, ties given the mean of the ranks they span."""
    v = np.asarray(values, dtype=float)
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    start = 0
    while start < len(v):
        end = start
        while end + 1 < len(v) and v[order[end + 1]] == v[order[start]]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks); NaN when either side is constant or n < 2."""
    if len(x) < 2:
        return math.nan
    rx, ry = average_ranks(x), average_ranks(y)
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return float(dx @ dy) / denom if denom > 0 else math.nan


def bootstrap_se(groups: Sequence[Sequence[Point]], statistic: Callable[[list[float], list[float]], float], *,
                 resamples: int, seed: int) -> float:
    """sd (ddof 1) of ``statistic(x, y)`` over resamples of ``groups`` drawn with replacement
    (replicates where it is undefined are dropped); NaN with fewer than two defined replicates."""
    groups = [list(g) for g in groups if g]
    if len(groups) < 2 or resamples < 2:
        return math.nan
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        points = [p for j in rng.integers(0, len(groups), len(groups)) for p in groups[j]]
        value = statistic([p[0] for p in points], [p[1] for p in points])
        if math.isfinite(value):
            values.append(value)
    return float(np.std(values, ddof=1)) if len(values) >= 2 else math.nan


def level_key(level: float) -> str:
    """A level as it appears in metric names: ``f"{level:g}"`` (MLflow forbids "@", so names read
    ``mean_rating_at_2``)."""
    return f"{level:g}"


def rating_summary(groups: Sequence[Sequence[Point]], levels: Sequence[float], *, resamples: int = 200,
                   seed: int = 0) -> dict[str, float]:
    """Per dimension: ``mean_rating_at_<d>`` (+ ``_se``, the standard error of the mean), ``slope``,
    ``slope_se``, ``spearman``, ``spearman_se`` and ``ratings`` (points used). ``groups``: one list
    of points per instruction."""
    points = [p for g in groups for p in g]
    x, y = [p[0] for p in points], [p[1] for p in points]
    out: dict[str, float] = {}
    for level in levels:
        name = f"mean_rating_at_{level_key(level)}"
        out[name], out[f"{name}_se"] = mean_and_se([r for lv, r in points if lv == level])
    out["slope"], out["slope_se"] = ols_slope(x, y)
    out["spearman"] = spearman(x, y)
    out["spearman_se"] = bootstrap_se(groups, spearman, resamples=resamples, seed=seed)
    out["ratings"] = float(len(points))
    return out


def binomial_rate(successes: int, n: int) -> tuple[float, float]:
    """p = successes / n and its binomial standard error √(p(1 − p)/n); NaN when n = 0."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    return p, math.sqrt(p * (1 - p) / n)
