"""Steerability, judged: do a conditioned model's answers follow the level a user requests?

Run by ``amopo evaluate`` when the evaluated model carries a conditioning spec
(``amopo_conditioning.json`` in its folder, or ``--steer-spec``), unless ``--no-steer``.

For each steered dimension k (the spec's scored dimensions, or ``--steer-dimensions``) and each of n
instructions x_i of the win-rate set (spread evenly over it, ``--steer-num-instructions``), the model
answers the user turn ``steered_user_text(spec, {k: d}, x_i)`` for d ∈ {low, (low + high)/2, high} of
k's scale, greedy like the win-rate answers. The base model answers the same conditioned prompts.

The judge rates each answer on k (1–5, the dimension's rubric) from the PLAIN instruction x_i and the
answer alone: the requested level never enters its prompt, so a rating can follow d only through
what the answer itself does.

Metrics, ``steer/`` for the model and ``steer_base/`` for the base (statistics in ``steer_stats``)::

    steer/<k>/mean_rating_at_<d>, …_se     mean judged rating at requested level d ("@" is not
                                           allowed in MLflow metric names)
    steer/<k>/slope, …/slope_se            least-squares slope of rating on d, OLS standard error
    steer/<k>/spearman, …/spearman_se      rank correlation of rating with d, bootstrap over instructions
    steer/<k>/ratings                      parsed ratings used
    steer/mean_slope, steer/mean_spearman  means over the dimensions
    steer/unparseable                      ratings the judge gave no parseable verdict for
    steer/side_effect/<k>/<j>, …_se        with ``--steer-side-effects`` and two or more rated dimensions:
                                           mean rating on another dimension j of the answers at k's
                                           high level minus at its low level (the judge rates those
                                           answers on j too, again from the plain instruction); se
                                           √(se_high² + se_low²). Steering k without side effects
                                           leaves it near 0 (miscalibration plus side effects, as
                                           arXiv 2505.23816 defines steerability)

Verbosity is also measured without a judge, by answer length (``amopo.evaluate.steer_length``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from amopo.data.dimensions import Dimension
from amopo.data.prompts import steered_user_text
from amopo.errors import ConfigError
from amopo.evaluate.steer_stats import level_key, rating_summary
from amopo.evaluate.winrate import mean_and_se
from amopo.steering import load_spec


def find_spec(model: str, explicit: str = "") -> dict | None:
    """The conditioning spec: the ``explicit`` file, else the one in a local model folder, else None
    (an endpoint, a hub id, or a model trained without conditioning). A bad spec file raises
    SteeringError naming it (``amopo.steering.load_spec``)."""
    if explicit:
        return load_spec(explicit)
    return load_spec(model) if Path(model).is_dir() else None


def spec_dimensions(spec: dict, requested: Sequence[str] = ()) -> list[Dimension]:
    """The scored dimensions of ``spec`` to steer, in the spec's order: ``requested`` (ConfigError
    naming what the spec steers when one is unknown or holistic), else the ones the model was trained
    to steer (the spec's ``steer_trained``; every scored one for a spec written before it existed)."""
    dims = [Dimension.from_json(d) for d in spec.get("dimensions", [])]
    scored = [d for d in dims if d.scored]
    if not requested:
        trained = spec.get("steer_trained")
        return scored if trained is None else [d for d in scored if d.name in trained]
    names = {d.name for d in scored}
    bad = [r for r in requested if r not in names]
    if bad:
        raise ConfigError(f"steer_dimensions: {', '.join(bad)} not a scored dimension of the model's conditioning "
                          f"spec (it steers: {', '.join(sorted(names)) or 'none'})")
    return [d for d in scored if d.name in requested]


def judged_dimensions(dims: Sequence[Dimension], prompts, *, requested: bool) -> tuple[list[Dimension], list[str]]:
    """The dimensions the judge can rate (it has a rubric) and the names left out. A requested
    dimension without a rubric is a ConfigError (raised by the prompt set)."""
    kept, skipped = [], []
    for dim in dims:
        try:
            prompts.rubric(dim.name)
            kept.append(dim)
        except ConfigError:
            if requested:
                raise
            skipped.append(dim.name)
    return kept, skipped


def levels(dim: Dimension) -> list[float]:
    """The requested levels: the scale's low end, its midpoint and its high end."""
    return [float(dim.low), (dim.low + dim.high) / 2, float(dim.high)]


@dataclass(frozen=True)
class SteerPrompt:
    dimension: str
    level: float
    index: int   # of the instruction in the steering set
    text: str    # the user turn the model answers: the dimension prefix at ``level``, then the instruction


def steer_prompts(spec: dict, dims: Sequence[Dimension], instructions: Sequence[str]) -> list[SteerPrompt]:
    """Dimension-major, then level, then instruction."""
    return [SteerPrompt(dim.name, level, i, steered_user_text(spec, {dim.name: level}, text))
            for dim in dims for level in levels(dim) for i, text in enumerate(instructions)]


def rate(judge, prompts: Sequence[SteerPrompt], instructions: Sequence[str], answers: Sequence[str], *,
         desc: str = "rating steered answers") -> list:
    """The judge's Verdict on each answer, on its prompt's dimension, given the plain instruction
    and the answer only."""
    items = [(instructions[p.index], answer, p.dimension) for p, answer in zip(prompts, answers, strict=True)]
    return judge.rate(items, desc=desc)


def summarize(prompts: Sequence[SteerPrompt], ratings: Sequence[float | None], dims: Sequence[Dimension], *,
              prefix: str = "steer", resamples: int = 200, seed: int = 0) -> dict[str, float]:
    """Flat ``{prefix}/…`` metrics (see the module docstring) from one rating (None: unparseable) per prompt."""
    groups: dict[str, dict[int, list[tuple[float, float]]]] = {d.name: {} for d in dims}
    unparseable = 0
    for p, value in zip(prompts, ratings, strict=True):
        if value is None:
            unparseable += 1
        else:
            groups[p.dimension].setdefault(p.index, []).append((p.level, float(value)))
    out: dict[str, float] = {}
    for dim in dims:
        part = rating_summary(list(groups[dim.name].values()), levels(dim), resamples=resamples, seed=seed)
        out.update({f"{prefix}/{dim.name}/{k}": v for k, v in part.items()})
    for stat in ("slope", "spearman"):
        values = [out[f"{prefix}/{d.name}/{stat}"] for d in dims if math.isfinite(out[f"{prefix}/{d.name}/{stat}"])]
        out[f"{prefix}/mean_{stat}"] = sum(values) / len(values) if values else math.nan
    out[f"{prefix}/unparseable"] = float(unparseable)
    return out


@dataclass(frozen=True)
class SideItem:
    steered: str   # the dimension whose level was requested
    other: str     # the dimension the answer is rated on
    level: float   # k's low or high end
    index: int     # of the prompt in the steering prompts


def side_effect_items(prompts: Sequence[SteerPrompt], dims: Sequence[Dimension]) -> list[SideItem]:
    """For every answer at the low or high end of its dimension k, one rating on each other dimension."""
    ends = {d.name: (float(d.low), float(d.high)) for d in dims}
    return [SideItem(p.dimension, other.name, p.level, n) for n, p in enumerate(prompts)
            if p.level in ends[p.dimension] for other in dims if other.name != p.dimension]


def rate_side_effects(judge, items: Sequence[SideItem], prompts: Sequence[SteerPrompt], instructions: Sequence[str],
                      answers: Sequence[str], *, desc: str = "rating side effects") -> list:
    """The judge's Verdict on each item's answer, on its other dimension (plain instruction and answer only)."""
    return judge.rate([(instructions[prompts[it.index].index], answers[it.index], it.other) for it in items],
                      desc=desc)


def side_effects(items: Sequence[SideItem], ratings: Sequence[float | None], dims: Sequence[Dimension], *,
                 prefix: str = "steer") -> dict[str, float]:
    """``{prefix}/side_effect/<k>/<j>`` and ``_se`` (module docstring) from one rating (None:
    unparseable, left out) per item."""
    ends = {d.name: (float(d.low), float(d.high)) for d in dims}
    values: dict[tuple[str, str, float], list[float]] = {}
    for it, value in zip(items, ratings, strict=True):
        if value is not None:
            values.setdefault((it.steered, it.other, it.level), []).append(float(value))
    out: dict[str, float] = {}
    for k in dims:
        for j in dims:
            if j.name == k.name:
                continue
            low, low_se = mean_and_se(values.get((k.name, j.name, ends[k.name][0]), []))
            high, high_se = mean_and_se(values.get((k.name, j.name, ends[k.name][1]), []))
            out[f"{prefix}/side_effect/{k.name}/{j.name}"] = high - low
            out[f"{prefix}/side_effect/{k.name}/{j.name}_se"] = math.sqrt(high_se ** 2 + low_se ** 2)
    return out


def sample_rows(side: str, prompts: Sequence[SteerPrompt], ids: Sequence[str], instructions: Sequence[str],
                answers: Sequence[str], ratings: Sequence[float | None]) -> list[dict]:
    """One row per steered answer: who answered, dimension, requested level, instruction, prompt, answer, rating."""
    return [{"side": side, "dimension": p.dimension, "level": p.level, "id": ids[p.index],
             "instruction": instructions[p.index], "prompt": p.text, "output": answer, "rating": rating}
            for p, answer, rating in zip(prompts, answers, ratings, strict=True)]


def curves(metrics: dict[str, float], dims: Sequence[Dimension], prefix: str) -> dict[str, tuple[list, list, list]]:
    """{dimension: (levels, mean ratings, their standard errors)} read back from the flat metrics."""
    out = {}
    for dim in dims:
        lv = levels(dim)
        keys = [f"{prefix}/{dim.name}/mean_rating_at_{level_key(v)}" for v in lv]
        if any(k in metrics for k in keys):
            out[dim.name] = (lv, [metrics.get(k, math.nan) for k in keys],
                             [metrics.get(k + "_se", math.nan) for k in keys])
    return out
