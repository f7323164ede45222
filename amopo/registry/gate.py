"""The promotion gate: a pure function of a candidate's metrics and the current champion's.

    promote  ⇔  every threshold holds on the candidate
                AND (no champion  OR  improvement ≥ min_improvement and improvement > 0)

    improvement = candidate[metric] − champion[metric]      (higher is better, the default)
                = champion[metric] − candidate[metric]      (lower is better)

A threshold is "key>=value", "key<=value", "key>value" or "key<value" on any key of the eval
``metrics.json`` (``winrate/lc>=0.5``, ``steer/verbosity/accuracy>=0.6``); a metric the candidate lacks
fails its threshold. A champion without the primary metric cannot be beaten (the candidate is
rejected with that reason) so that a change of metric names never promotes silently.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

from amopo.errors import ConfigError

# Held-out preference accuracy on the plain prompt (amopo evaluate). Not pref_accuracy/<dimension>:
# a conditioned prompt shows the chosen response's score, so its accuracy measures steering, not quality.
DEFAULT_METRIC = "pref_accuracy/plain"

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_THRESHOLD = re.compile(r"^\s*(?P<key>[^<>=\s][^<>=]*?)\s*(?P<op>>=|<=|>|<)\s*(?P<value>[^<>=]+?)\s*$")


@dataclass(frozen=True)
class Threshold:
    key: str
    op: str
    value: float

    def holds(self, metrics: dict[str, float]) -> bool:
        return self.key in metrics and _OPS[self.op](metrics[self.key], self.value)

    def __str__(self) -> str:
        return f"{self.key}{self.op}{self.value:g}"


@dataclass
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)


def parse_threshold(text: str) -> Threshold:
    """Parse "key>=value" (also <=, >, <); ConfigError naming the text when malformed."""
    match = _THRESHOLD.match(text or "")
    if not match:
        raise ConfigError(f"gate threshold {text!r}: expected KEY>=VALUE or KEY<=VALUE (also > and <)")
    try:
        value = float(match["value"])
    except ValueError:
        raise ConfigError(f"gate threshold {text!r}: {match['value']!r} is not a number") from None
    if math.isnan(value):
        raise ConfigError(f"gate threshold {text!r}: the value is NaN")
    return Threshold(match["key"], match["op"], value)


def decide(candidate: dict[str, float], champion: dict[str, float] | None, *, metric: str = DEFAULT_METRIC,
           min_improvement: float = 0.0, thresholds: Sequence[Threshold] = (),
           higher_is_better: bool = True, rival: str = "champion") -> Decision:
    """Apply the gate (see the module docstring). ``champion`` is None when there is none;
    ``rival`` names it in the reasons.

    Every reason is recorded, passing or failing, so the decision can be read back from the version.
    """
    reasons: list[str] = []
    ok = True
    for t in thresholds:
        if t.key not in candidate:
            ok = False
            reasons.append(f"threshold {t} fails: the candidate has no metric '{t.key}'")
        elif t.holds(candidate):
            reasons.append(f"threshold {t} holds ({t.key}={candidate[t.key]:g})")
        else:
            ok = False
            reasons.append(f"threshold {t} fails ({t.key}={candidate[t.key]:g})")
    if metric not in candidate:
        return Decision(False, reasons + [f"the candidate has no primary metric '{metric}'"])
    if champion is None:
        reasons.append(f"no {rival} yet; {metric}={candidate[metric]:g}")
        return Decision(ok, reasons)
    if metric not in champion:
        return Decision(False, reasons + [f"the {rival} has no '{metric}' to compare with"])
    gain = candidate[metric] - champion[metric]
    if not higher_is_better:
        gain = -gain
    beats = gain > 0 and gain >= min_improvement - 1e-12
    verdict = "beats" if beats else "does not beat"
    reasons.append(f"{metric}: {candidate[metric]:g} vs {rival} {champion[metric]:g} "
                   f"(improvement {gain:+g}, required ≥ {min_improvement:g} and > 0) {verdict} the {rival}")
    return Decision(ok and beats, reasons)


def base_metric(metric: str) -> str:
    """The eval report's key for the base model's value of ``metric``: "_base" after the first word of
    its first segment (pref_accuracy/x → pref_base_accuracy/x, steer/k/accuracy → steer_base/k/accuracy)."""
    head, sep, rest = metric.partition("/")
    word, under, tail = head.partition("_")
    return f"{word}_base{under}{tail}{sep}{rest}"


def decide_against_base(metrics: dict[str, float], *, metric: str = DEFAULT_METRIC, min_improvement: float = 0.0,
                        thresholds: Sequence[Threshold] = (), compare: bool = True) -> Decision:
    """The pre-registration gate: every threshold holds AND the trained model beats its own base
    model on ``metric`` (``metrics[base_metric(metric)]``, measured by the same evaluation).

    With ``compare`` false the thresholds decide alone; with it true a missing base measurement fails.
    """
    key = base_metric(metric)
    if not compare:
        return decide(metrics, None, metric=metric, thresholds=thresholds, rival="comparison with the base model")
    if key not in metrics:
        return Decision(False, [f"no base-model measurement '{key}' to compare {metric} with"])
    return decide(metrics, {metric: metrics[key]}, metric=metric, min_improvement=min_improvement,
                  thresholds=thresholds, rival="base model")
