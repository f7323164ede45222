"""Cost of a training run, from its ``history.jsonl`` (one record per optimizer step, each with
``tokens_per_s`` and ``seconds_per_step``) and its ``metrics.json``.

With steps s = 1 … S and w the warm-up steps left out (w = 1 when S > 1, else 0):

    tokens_per_s     = (1/(S − w)) Σ_{s > w} tokens_per_s_s        (mean over steps, first one left out)
    tokens_per_s_se  = sd_{s > w}(tokens_per_s_s) / √(S − w)       (ddof = 1; NaN with one step)
    wall_s           = Σ_{s=1..S} seconds_per_step_s              (every step, warm-up included)
    peak_memory_bytes                                              when the run recorded it

The first step carries one-off work (allocator growth, lazy kernels, compilation), so it would
understate steady-state throughput; it does count toward the time the run took. Wall time is the
time in optimizer steps: set-up, held-out measurements and saving are not in the history.
"""

from __future__ import annotations

import math
from typing import Sequence

from amopo.evaluate.winrate import mean_and_se

# Where a run may record its peak accelerator memory: its metrics.json, else the largest value in its
# history. ``amopo train`` records neither yet; the comparison then reports the figure as absent.
PEAK_MEMORY_KEYS = ("peak_memory_bytes", "memory/peak_bytes")


def _values(history: Sequence[dict], key: str) -> list[float]:
    out = []
    for record in history:
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out.append(float(value))
    return out


def peak_memory(train_metrics: dict, history: Sequence[dict]) -> float | None:
    """Peak memory in bytes when the run recorded it, else None."""
    for key in PEAK_MEMORY_KEYS:
        value = train_metrics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    recorded = [v for key in PEAK_MEMORY_KEYS for v in _values(history, key)]
    return max(recorded) if recorded else None


def training_stats(history: Sequence[dict], train_metrics: dict | None = None) -> dict[str, float]:
    """``train/tokens_per_s`` (+ ``_se``), ``train/wall_s``, ``train/steps``, ``train/warmup_steps_excluded``
    and ``train/peak_memory_bytes``; a figure the history cannot give is left out."""
    out: dict[str, float] = {}
    speeds = _values(history, "tokens_per_s")
    if speeds:
        warmup = 1 if len(speeds) > 1 else 0
        out["train/tokens_per_s"], out["train/tokens_per_s_se"] = mean_and_se(speeds[warmup:])
        out["train/warmup_steps_excluded"] = float(warmup)
    seconds = _values(history, "seconds_per_step")
    if seconds:
        out["train/wall_s"] = sum(seconds)
    if history:
        out["train/steps"] = float(len(history))
    peak = peak_memory(train_metrics or {}, history)
    if peak is not None:
        out["train/peak_memory_bytes"] = peak
    return out
