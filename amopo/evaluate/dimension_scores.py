"""Per-dimension scores: the judge rates every answer 1–5 on each dimension, with a rubric.

For dimension d and side s ∈ {model, baseline}, over the answers whose rating parsed:

    mean_{s,d} = (1/n_{s,d}) Σ_i score_{s,d,i}        delta_d = mean_{model,d} − mean_{baseline,d}
"""

from __future__ import annotations

import math
from typing import Sequence

from amopo.evaluate.winrate import mean_and_se


def rate_answers(judge, instructions: Sequence[str], outputs: dict[str, Sequence[str]],
                 dimensions: Sequence[str]) -> dict[str, dict[str, list]]:
    """``{side: {dimension: [Verdict per instruction]}}`` for every side in ``outputs``."""
    items, keys = [], []
    for side, answers in outputs.items():
        for dim in dimensions:
            for k, (instruction, answer) in enumerate(zip(instructions, answers, strict=True)):
                items.append((instruction, answer, dim))
                keys.append((side, dim, k))
    verdicts = judge.rate(items, desc=f"rating {len(dimensions)} dimension(s)")
    out: dict[str, dict[str, list]] = {side: {dim: [None] * len(instructions) for dim in dimensions}
                                       for side in outputs}
    for (side, dim, k), verdict in zip(keys, verdicts, strict=True):
        out[side][dim][k] = verdict
    return out


def summarize(ratings: dict[str, dict[str, list]], dimensions: Sequence[str]) -> dict[str, float]:
    """Flat metrics: ``dimension/<d>/<side>``, ``…/<side>_se``, ``…/delta`` and ``dimension/mean_delta``,
    plus ``judge/unparseable_ratings``."""
    metrics: dict[str, float] = {}
    unparseable = 0
    for dim in dimensions:
        for side in ratings:
            values = [v.value for v in ratings[side][dim] if v.value is not None]
            unparseable += len(ratings[side][dim]) - len(values)
            mean, se = mean_and_se(values)
            metrics[f"dimension/{dim}/{side}"] = mean
            metrics[f"dimension/{dim}/{side}_se"] = se
        if "model" in ratings and "baseline" in ratings:
            metrics[f"dimension/{dim}/delta"] = metrics[f"dimension/{dim}/model"] - metrics[f"dimension/{dim}/baseline"]
    deltas = [metrics[f"dimension/{d}/delta"] for d in dimensions if f"dimension/{d}/delta" in metrics]
    finite = [d for d in deltas if not math.isnan(d)]
    if deltas:
        metrics["dimension/mean_delta"] = sum(finite) / len(finite) if finite else math.nan
    metrics["judge/unparseable_ratings"] = float(unparseable)
    return metrics
