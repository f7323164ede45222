"""The comparison table: which figures are compared, read out of each objective's evaluation and
training folders under the evaluation's own key names, each with its standard error.

    pref_accuracy/plain       held-out accuracy on the plain prompt; se = √(p (1 − p) / n), n =
                              ``pref_accuracy/pairs`` (binomial; the evaluation records no per-pair se)
    pref_margin/plain         mean ā_w − ā_l on the plain prompt (not a rate; no se)
    winrate/raw, winrate/lc   win rate against the base model, with the evaluation's ``_se``
    dimension/<d>/model       mean judge score 1–5 on dimension d, with ``_se``
    steer/…                   steerability, where the evaluation measured it (a conditioned model);
                              columns every objective lacks are left out, others show as absent:
                              per dimension accuracy, Spearman ρ and slope of the judged rating; for
                              verbosity the Spearman ρ of answer length and the miscalibration (lower
                              is better); side effects ``steer/side_effect/<k>/<j>`` (rating change
                              on j from k's low to high request; a fall is the loss)
    train/tokens_per_s, train/wall_s, train/peak_memory_bytes     see ``training_stats``

A figure is absent for an objective when its folders do not hold it; it is never guessed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from amopo.compare.entries import Entry
from amopo.compare.training_stats import training_stats


@dataclass(frozen=True)
class Metric:
    name: str                       # key under each objective in comparison.json
    title: str                      # how the report names it
    kind: str                       # rate (shown in %), score (1–5), number, seconds, bytes
    higher_is_better: bool = True
    short: str = ""                 # axis label in the figures (default: the title)


FIXED = [
    Metric("pref_accuracy/plain", "held-out accuracy (plain prompt)", "rate", short="held-out\naccuracy"),
    Metric("pref_margin/plain", "held-out margin ā_w − ā_l (plain)", "number", short="held-out margin"),
    Metric("winrate/raw", "win rate vs base (raw)", "rate", short="win rate\n(raw)"),
    Metric("winrate/lc", "win rate vs base (length-controlled)", "rate", short="win rate\n(LC)"),
]
TRAINING = [
    Metric("train/tokens_per_s", "training tokens/s, each conditioned copy counted (warm-up step excluded)", "number", short="tokens/s"),
    Metric("train/wall_s", "training wall time (sum of step times)", "seconds", higher_is_better=False,
           short="wall time (s)"),
    Metric("train/peak_memory_bytes", "peak memory", "bytes", higher_is_better=False, short="peak memory (GiB)"),
]
STEER_HEADLINE = {"steer/accuracy": ("steering accuracy (held-out pairs)", "rate", "steering\naccuracy"),
                  "steer/mean_spearman": ("steerability: mean Spearman ρ (level vs rating)", "number",
                                          "mean Spearman ρ"),
                  "steer/mean_slope": ("steerability: mean slope (rating per level)", "number", "mean slope")}
INFO = ("pref_accuracy/pairs", "winrate/n", "train/steps", "train/warmup_steps_excluded")  # counts shown beside
_STEER_DIM = re.compile(r"^steer/([^/]+)/(accuracy|spearman|slope|length_spearman|miscalibration)$")
_SIDE_EFFECT = re.compile(r"^steer/side_effect/([^/]+)/([^/]+)$")
_LOWER_IS_BETTER = ("miscalibration",)
_DIMENSION = re.compile(r"^dimension/([^/]+)/model$")


def binomial_se(p: float, n: float) -> float:
    """√(p (1 − p) / n); NaN when n < 1."""
    return math.sqrt(p * (1.0 - p) / n) if n >= 1 else math.nan


def dimensions(entries: Sequence[Entry]) -> list[str]:
    """Judge-scored dimensions of any evaluation, in first-seen order."""
    out: list[str] = []
    for entry in entries:
        for key in entry.eval_metrics:
            match = _DIMENSION.match(key)
            if match and match.group(1) not in out:
                out.append(match.group(1))
    return out


def _steer_metrics(entries: Sequence[Entry]) -> list[Metric]:
    keys = {k for e in entries for k in e.eval_metrics}
    out = [Metric(k, title, kind, short=short) for k, (title, kind, short) in STEER_HEADLINE.items() if k in keys]
    for key in sorted(k for k in keys if _STEER_DIM.match(k)):
        dim, stat = _STEER_DIM.match(key).groups()
        name, what = dim.replace("_", " "), stat.replace("_", " ")
        out.append(Metric(key, f"steer {name}: {what}", "rate" if stat == "accuracy" else "number",
                          higher_is_better=stat not in _LOWER_IS_BETTER, short=f"steer {name}\n{what}"))
    for key in sorted(k for k in keys if _SIDE_EFFECT.match(k) and not k.endswith("_se")):
        steered, other = (m.replace("_", " ") for m in _SIDE_EFFECT.match(key).groups())
        out.append(Metric(key, f"side effect of steering {steered} on {other} (rating, high − low)", "number",
                          short=f"{steered} →\n{other}"))
    return out


def catalog(entries: Sequence[Entry]) -> list[Metric]:
    """The metrics compared, in report order: fixed ones, judge scores, steerability (only those some
    evaluation holds), training cost."""
    dims = [Metric(f"dimension/{d}/model", f"judge score: {d.replace('_', ' ')} (1–5)", "score",
                   short=d.replace("_", "\n")) for d in dimensions(entries)]
    return FIXED + dims + _steer_metrics(entries) + TRAINING


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def objective_metrics(entry: Entry, metrics: Iterable[Metric]) -> dict[str, float]:
    """One objective's figures ``{name: value, name_se: se}`` (finite values only), plus the base
    model's judge scores ``dimension/<d>/baseline`` for the radar."""
    source = {k: float(v) for k, v in entry.eval_metrics.items() if _finite(v)}
    source.update({k: v for k, v in training_stats(entry.history, entry.train_metrics).items() if _finite(v)})
    out: dict[str, float] = {}
    for metric in metrics:
        if metric.name not in source:
            continue
        out[metric.name] = source[metric.name]
        se = source.get(f"{metric.name}_se")
        if metric.name == "pref_accuracy/plain" and "pref_accuracy/pairs" in source:
            se = binomial_se(source[metric.name], source["pref_accuracy/pairs"])
        if se is not None and math.isfinite(se):
            out[f"{metric.name}_se"] = se
    for key, value in source.items():
        if key in INFO or (key.startswith("dimension/") and key.endswith("/baseline")):
            out[key] = value
    if entry.beta is not None:
        out["train/beta"] = entry.beta
    return out
