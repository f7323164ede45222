"""Which objective leads on a metric, and whether its lead over the runner-up is within noise.

Objectives that have a value v_o (± se_o) for metric m are ranked best first (highest v when higher
is better, lowest otherwise). Ties in v go to the smaller se (a missing se counts as infinite), then
to the label in alphabetical order, so the result does not depend on the order objectives were given.
Objectives without the metric are left out, each with its reason.

Within noise. With best b and runner-up s:

    lead  = |v_b − v_s|
    noise = 2 √(se_b² + se_s²)
    within_noise  ⇔  lead < noise

the lead is under two standard errors of the difference of two independent estimates (about a 95%
interval). Objectives measured on the same items (the same held-out pairs, the same instructions)
have correlated errors, so the paired difference would have a smaller se: this rule leans toward
"within noise". With either se missing the rule does not apply (``within_noise`` is None).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

RULE = ("the best objective's lead over the second is within noise when lead < 2·√(se₁² + se₂²) "
        "(two standard errors of the difference of independent estimates); with a standard error missing "
        "the rule does not apply")


@dataclass(frozen=True)
class Best:
    metric: str
    higher_is_better: bool
    label: str | None                     # None when no objective has the metric
    value: float | None = None
    se: float | None = None
    second: str | None = None
    lead: float | None = None
    noise: float | None = None
    within_noise: bool | None = None
    ranking: list[str] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)   # label → why it was left out

    @property
    def reason(self) -> str:
        """One line saying what was chosen and how sure it is."""
        if self.label is None:
            why = "; ".join(f"{k}: {v}" for k, v in self.excluded.items()) or "no objectives"
            return f"no objective has {self.metric} ({why})"
        if self.second is None:
            return f"{self.label} is the only objective with {self.metric}"
        if self.within_noise is None:
            verdict = "no standard error, so not judged against noise"
        else:
            verdict = ("within noise" if self.within_noise else "beyond noise") + \
                f" (lead {self.lead:.4g} vs 2·se {self.noise:.4g})"
        return f"{self.label} leads {self.second} on {self.metric}: {verdict}"


def _number(value) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def load_comparison(source: Mapping | str | Path) -> Mapping:
    """A comparison dict as it is, or read from ``comparison.json`` (the file or its folder)."""
    if isinstance(source, Mapping):
        return source
    path = Path(source)
    path = path / "comparison.json" if path.is_dir() else path
    return json.loads(path.read_text(encoding="utf-8"))


def best_objective(comparison: Mapping | str | Path, metric: str = "pref_accuracy/plain",
                   higher_is_better: bool = True) -> Best:
    """The objective that leads on ``metric`` in a comparison (``comparison.json``: its
    ``objectives`` and flat ``<label>/<metric>`` and ``<label>/<metric>_se`` keys); see the module
    docstring for order, ties and the noise rule."""
    data = load_comparison(comparison)
    candidates, excluded = [], {}
    for label in data.get("objectives", []):
        value = _number(data.get(f"{label}/{metric}"))
        if value is None:
            absent = data.get(f"{label}/absent") or []
            excluded[label] = (f"{metric} absent from its folders" if metric in absent
                               else f"no {metric} in the comparison")
            continue
        candidates.append((label, value, _number(data.get(f"{label}/{metric}_se"))))
    sign = -1.0 if higher_is_better else 1.0
    candidates.sort(key=lambda c: (sign * c[1], math.inf if c[2] is None else c[2], c[0]))
    if not candidates:
        return Best(metric, higher_is_better, None, excluded=excluded)
    label, value, se = candidates[0]
    best = dict(metric=metric, higher_is_better=higher_is_better, label=label, value=value, se=se,
                ranking=[c[0] for c in candidates], excluded=excluded)
    if len(candidates) == 1:
        return Best(**best)
    second, value2, se2 = candidates[1]
    lead = abs(value - value2)
    noise = 2.0 * math.sqrt(se ** 2 + se2 ** 2) if se is not None and se2 is not None else None
    return Best(**best, second=second, lead=lead, noise=noise,
                within_noise=None if noise is None else lead < noise)


def leader_keys(best: Best) -> dict:
    """The flat ``leader/<metric>/…`` keys of comparison.json for one metric."""
    prefix = f"leader/{best.metric}"
    out = {f"{prefix}/best": best.label, f"{prefix}/higher_is_better": best.higher_is_better,
           f"{prefix}/within_noise": best.within_noise}
    if best.second is not None:
        out.update({f"{prefix}/second": best.second, f"{prefix}/lead": best.lead})
    if best.noise is not None:
        out[f"{prefix}/noise"] = best.noise
    return out
