"""MODPO's margin, from the objectives other than the one being optimised.

MODPO (Zhou et al., 2024, "Beyond One-Preference-Fits-All Alignment: Multi-Objective Direct
Preference Optimization") trains objective k on preference pairs of k, with the rewards r_{−k} of
the other objectives as a margin, under weights w = (w_k, w_{−k}) that sum to 1:

    ℓ = −log σ( (β/w_k)·(Δ_w − Δ_l) − (1/w_k)·w_{−k}ᵀ(r_{−k}(x, y_w) − r_{−k}(x, y_l)) ),   Δ = log π − log π_ref

(:func:`amopo.objectives.modpo_loss`). Here w_k = ``modpo_weight``, k = ``modpo_objective`` (the
dimension that ordered the pairs: helpfulness for HelpSteer2), and a pair's w_{−k}ᵀ(r_{−k}(y_w) −
r_{−k}(y_l)), its *margin gap*, comes from

* its records' ``reward_score`` where both responses carry one: one other objective, weight 1 − w_k;
* else the scores of the margin dimensions (``modpo_margin``; default every scored dimension of the
  data but k), M of them, each weighted (1 − w_k)/M, one rating point counting as one unit of
  reward. A dimension unscored on either response adds nothing to that pair's gap.

The margin never comes from k itself: k chose the chosen response, so its gap is ≥ 0 by
construction and restates the preference being learnt. A pair with neither source is refused
(:class:`amopo.errors.ConfigError`), so is a margin dimension that is k, holistic or not in the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from amopo.data.dimensions import KNOWN
from amopo.errors import ConfigError


@dataclass(frozen=True)
class MarginSpec:
    """Where MODPO's margin comes from: the optimised objective, its weight w_k, and the margin
    dimensions with their positions in the data's dimensions."""
    objective: str
    weight: float
    dimensions: tuple[str, ...]
    indices: tuple[int, ...]

    @property
    def dimension_weight(self) -> float:
        """w_j = (1 − w_k)/M of each margin dimension."""
        return (1.0 - self.weight) / len(self.dimensions) if self.dimensions else 0.0

    def describe(self) -> str:
        dims = (", ".join(f"{d} (w {self.dimension_weight:.3g})" for d in self.dimensions)
                if self.dimensions else "none")
        return (f"modpo: optimising {self.objective} (w_k {self.weight:g}); margin from reward_score "
                f"(w {1.0 - self.weight:.3g}) where a pair has it, else from the scores of: {dims}")


def _holistic(name: str) -> bool:
    """A dimension with no score (``overall``); dimensions the registry does not know are scored."""
    return name in KNOWN and not KNOWN[name].scored


def margin_spec(objective: str, margin: Sequence[str] | None, weight: float,
                dimensions: Sequence[str]) -> MarginSpec:
    """Resolve the margin dimensions: ``margin`` as given, checked against the data's
    ``dimensions``, or by default every scored one but ``objective``."""
    dims = list(dimensions)
    if margin is None:
        names = [d for d in dims if d != objective and not _holistic(d)]
    else:
        names = list(margin)
        for name in names:
            if name == objective:
                raise ConfigError(f"train config: modpo_margin names '{name}', the objective being optimised "
                                  "(modpo_objective); MODPO's margin must come from the other objectives")
            if name not in dims:
                raise ConfigError(f"train config: modpo_margin: '{name}' is not among the data's dimensions "
                                  f"({', '.join(dims)})")
            if _holistic(name):
                raise ConfigError(f"train config: modpo_margin: '{name}' is holistic (it has no score)")
    return MarginSpec(objective, float(weight), tuple(names), tuple(dims.index(n) for n in names))


def _row_gap(row: dict, spec: MarginSpec) -> float | None:
    """w_{−k}ᵀ(r_{−k}(y_w) − r_{−k}(y_l)) of one row; None where it has no margin source."""
    rw, rl = row["chosen_reward"], row["rejected_reward"]
    if not (math.isnan(rw) or math.isnan(rl)):
        return (1.0 - spec.weight) * (rw - rl)
    gaps = [row["chosen_scores"][i] - row["rejected_scores"][i] for i in spec.indices]
    scored = [g for g in gaps if not math.isnan(g)]
    return spec.dimension_weight * sum(scored) if scored else None


def margin_gaps(rows: Sequence[dict], dimensions: Sequence[str], spec: MarginSpec, *, where: str = "") -> torch.Tensor:
    """The margin gap w_{−k}ᵀ(r_{−k}(y_w) − r_{−k}(y_l)) of each row [B] (tokenised rows of
    :mod:`amopo.data.tokenize`); ConfigError naming the first row without a margin source and how
    many lack one. ``where`` names the rows' file (row ``id`` n is its line n + 1)."""
    out, missing = [], []
    for row in rows:
        gap = _row_gap(row, spec)
        if gap is None:
            missing.append(row["id"])
        out.append(gap)
    if missing:
        first = missing[0]
        place = f"pair {first} of {where} (line {first + 1})" if where else f"pair {first}"
        dims = ", ".join(spec.dimensions) or f"none: the data's dimensions are {', '.join(dimensions)}"
        raise ConfigError(
            f"loss 'modpo': {len(missing)} of {len(rows)} pairs, the first {place}, have no margin from an "
            f"objective other than '{spec.objective}' (modpo_objective): their responses carry no reward_score, "
            f"and no margin dimension is scored on both (margin dimensions: {dims}). MODPO's margin must come "
            "from the other objectives: prepare the data with another scored dimension (--dimensions), give "
            "the records a reward_score, or choose modpo_objective / modpo_margin")
    return torch.tensor(out, dtype=torch.float32)


def check_margin(objective: str, margin: Sequence[str] | None, weight: float, dimensions: Sequence[str],
                 rows: Sequence[dict], where: str) -> str:
    """Before training: refuse MODPO where any training pair has no margin source; else describe
    the margin."""
    spec = margin_spec(objective, margin, weight, dimensions)
    margin_gaps(rows, dimensions, spec, where=where)
    return spec.describe()
