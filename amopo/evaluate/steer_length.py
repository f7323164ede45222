"""Steerability without a judge where the dimension allows it: verbosity measured by answer length.

The steered answers (``amopo.evaluate.steerability``: every instruction x_i answered at the low,
middle and high level d of the dimension) are counted in tokens of the evaluated model's tokenizer
(special tokens left out); the base model's answers are counted with the same tokenizer. Points are
(d, tokens), one group per instruction. Metrics, under ``steer/<k>/`` (``steer_base/<k>/`` for
the base model) for each length dimension k (:data:`LENGTH_DIMENSIONS`) the model is steered on::

    mean_tokens_at_<d>, …_se      mean answer length at requested level d, standard error of the mean
    length_spearman, …_se         Spearman ρ of length with d (average ranks); se: bootstrap over
                                  instructions, as ``steer_stats.rating_summary`` does
    achieved_level_at_<d>         mean achieved level (the mapping below) of the answers at d
    miscalibration, …_se          mean |d − achieved level| over every answer; standard error of the mean

The level-to-length mapping is the one the data defines: over the responses of the prepared folder
(``--data``: train and eval splits, chosen and rejected, each distinct (text, score) once) that carry
a score s on k, L(s) = mean token length of the responses scored s. An achieved length ℓ maps to a
level by linear interpolation between the points (L(s), s) taken in order of length (scores whose
L ties are averaged), clamped to the lowest and highest scored level outside their range:

    level(ℓ) = s_j + (ℓ − L_j) (s_{j+1} − s_j) / (L_{j+1} − L_j)    for L_j ≤ ℓ ≤ L_{j+1}

e.g. L(0) = 10, L(4) = 50: an answer of 30 tokens is level 2, one of 60 tokens level 4. With fewer
than two distinct L the mapping is undefined and miscalibration is not reported. A model that
ignores the request answers alike at every level: length_spearman is 0 and miscalibration is the
mean distance of the levels from that one achieved level.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from amopo.evaluate.steer_stats import Point, bootstrap_se, level_key, spearman
from amopo.evaluate.winrate import mean_and_se

LENGTH_DIMENSIONS = ("verbosity",)   # dimensions whose level an answer's length measures


def token_lengths(tokenizer, texts: Sequence[str]) -> list[int]:
    """Tokens of each text under ``tokenizer``, special tokens left out."""
    return [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]


def data_responses(data: str | Path, dimension: str) -> list[tuple[str, float]]:
    """Distinct (response text, score on ``dimension``) of a prepared folder's train and eval splits."""
    from amopo.data.dimensions import Dimension, registry
    from amopo.data.readers import read_amopo
    from amopo.data.tokenize import read_manifest

    manifest = read_manifest(data)
    dims = [Dimension.from_json(d) for d in manifest["dimensions"]]
    known = {**registry(manifest.get("source", {}).get("format", "amopo")), **{d.name: d for d in dims}}
    seen: dict[tuple[str, float], None] = {}
    for split in ("train", "eval"):
        path = Path(data) / f"{split}.jsonl"
        if not path.is_file() or manifest.get("counts", {}).get(split) == 0:
            continue
        for pair in read_amopo(path, known=known, max_chars=sys.maxsize).pairs:
            for side in ("chosen", "rejected"):
                score = pair.score(side, dimension)
                if not math.isnan(score):
                    seen[(getattr(pair, side).text, float(score))] = None
    return list(seen)


def length_table(lengths: Sequence[float], scores: Sequence[float]) -> list[tuple[float, float]]:
    """[(score s, L(s) = mean length of the responses scored s)] in order of score."""
    by_score: dict[float, list[float]] = {}
    for length, score in zip(lengths, scores, strict=True):
        by_score.setdefault(float(score), []).append(float(length))
    return [(s, sum(v) / len(v)) for s, v in sorted(by_score.items())]


def level_of_length(length: float, table: Sequence[tuple[float, float]]) -> float:
    """The level an answer of ``length`` tokens reaches under ``table`` (see the module docstring);
    NaN when the table has fewer than two distinct mean lengths."""
    by_length: dict[float, list[float]] = {}
    for score, mean in table:
        by_length.setdefault(mean, []).append(score)
    if len(by_length) < 2:
        return math.nan
    xs = sorted(by_length)
    return float(np.interp(length, xs, [sum(by_length[x]) / len(by_length[x]) for x in xs]))


def length_summary(groups: Sequence[Sequence[Point]], levels: Sequence[float],
                   table: Sequence[tuple[float, float]] | None, *, resamples: int = 200,
                   seed: int = 0) -> dict[str, float]:
    """The metrics of the module docstring (without prefix) from one group of (level, tokens) points
    per instruction; ``table`` None (no data): no achieved levels, no miscalibration."""
    points = [p for g in groups for p in g]
    out: dict[str, float] = {}
    for level in levels:
        name = f"mean_tokens_at_{level_key(level)}"
        out[name], out[f"{name}_se"] = mean_and_se([t for lv, t in points if lv == level])
    x, y = [p[0] for p in points], [p[1] for p in points]
    out["length_spearman"] = spearman(x, y)
    out["length_spearman_se"] = bootstrap_se(groups, spearman, resamples=resamples, seed=seed)
    if table is not None and not math.isnan(level_of_length(0.0, table)):
        achieved = [(lv, level_of_length(t, table)) for lv, t in points]
        for level in levels:
            out[f"achieved_level_at_{level_key(level)}"] = mean_and_se([a for lv, a in achieved if lv == level])[0]
        out["miscalibration"], out["miscalibration_se"] = mean_and_se([abs(lv - a) for lv, a in achieved])
    return out


def length_curves(metrics: dict[str, float], names: Sequence[str], levels: dict[str, Sequence[float]],
                  prefix: str) -> dict[str, tuple[list, list, list]]:
    """{dimension: (levels, mean tokens, their standard errors)} read back from the flat metrics."""
    out = {}
    for name in names:
        keys = [f"{prefix}/{name}/mean_tokens_at_{level_key(v)}" for v in levels[name]]
        if any(k in metrics for k in keys):
            out[name] = (list(levels[name]), [metrics.get(k, math.nan) for k in keys],
                         [metrics.get(k + "_se", math.nan) for k in keys])
    return out
