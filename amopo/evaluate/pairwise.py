"""Pairwise judging in both orders.

Every instruction is judged twice: model answer first, then baseline answer first. A judge's
value is P(first answer better), so P(model better) is v₁ from the first verdict and 1 − v₂ from the
second; the instruction's preference is their mean (``winrate.combine_orders``), which cancels a
judge's constant preference for a position. The judge's own position bias is reported as

    first_position_rate = mean over parsed verdicts of P(first answer better)   (0.5 = unbiased)
"""

from __future__ import annotations

import math
from typing import Sequence

from amopo.evaluate.winrate import combine_orders


def judge_both_orders(judge, instructions: Sequence[str], model_outputs: Sequence[str],
                      baseline_outputs: Sequence[str]) -> list[dict]:
    """One record per instruction: P(model better) in each order, the raw verdicts, the preference."""
    n = len(instructions)
    items = [(i, m, b) for i, m, b in zip(instructions, model_outputs, baseline_outputs, strict=True)]
    items += [(i, b, m) for i, m, b in zip(instructions, model_outputs, baseline_outputs, strict=True)]
    verdicts = judge.compare(items, desc="judging pairs (both orders)")
    records = []
    for k in range(n):
        first, second = verdicts[k], verdicts[n + k]
        model_first = first.value
        baseline_first = None if second.value is None else 1.0 - second.value
        records.append({"verdict_model_first": model_first, "verdict_baseline_first": baseline_first,
                        "raw_model_first": first.raw, "raw_baseline_first": second.raw,
                        "preference": combine_orders(model_first, baseline_first)})
    return records


def position_stats(records: Sequence[dict]) -> dict[str, float]:
    """Unparseable verdict count and the judge's rate of preferring the first position."""
    first_wins = []
    unparseable = 0
    for r in records:
        if r["verdict_model_first"] is None:
            unparseable += 1
        else:
            first_wins.append(r["verdict_model_first"])
        if r["verdict_baseline_first"] is None:
            unparseable += 1
        else:
            first_wins.append(1.0 - r["verdict_baseline_first"])
    rate = sum(first_wins) / len(first_wins) if first_wins else math.nan
    return {"unparseable": float(unparseable), "verdicts": float(2 * len(records)), "first_position_rate": rate}
