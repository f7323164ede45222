"""The objectives a pipeline run trains side by side, from one parameter.

    objectives = "amopo,simpo,dpo"                      three entries, each with its own defaults
    objectives = "amopo,amopo:weighting=uniform,modpo"  an ablation variant: options after ':'
    objectives = "simpo:learning_rate=5e-5:beta=2.0"   per-entry learning rate and β
    objectives = ""                                     the single `objective` of the run, as before

An entry is ``OBJECTIVE[:KEY=VALUE]...``; its label is the entry as written. ``learning_rate`` and ``beta`` set
the entry's learning rate and β; any other key is an `amopo train` option (TrainConfig field). An
entry without ``beta`` trains at its objective's own default (``beta`` < 0 means that too), so DPO
gets 0.1 where AMoPO gets 0.8.
"""

from __future__ import annotations

import dataclasses

import yaml

from amopo.errors import ConfigError
from amopo.train.config import LOSSES, TrainConfig

_OPTIONS = {f.name for f in dataclasses.fields(TrainConfig)}
# Set by the pipeline itself for every entry; an entry may not change what is compared on.
_FIXED = {"data", "base_model", "output", "objective", "max_steps", "batch_size", "gradient_accumulation_steps", "max_length",
          "heldout_max_pairs", "mlflow_tracking_uri", "mlflow_experiment"}


def _value(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _number(entry: str, key: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"objectives: entry '{entry}': {key} must be a number, got '{raw}'") from None


def plan_objectives(spec: str, *, objective: str, learning_rate: float, beta: float,
                    train_options: dict | None = None) -> list[dict]:
    """One dict per entry: ``label``, ``objective``, ``learning_rate``, ``beta`` (< 0: the objective's
    default) and ``train_options`` (the run's, updated by the entry's). Raises ConfigError naming the entry."""
    entries = [e.strip() for e in spec.split(",") if e.strip()] or [objective]
    dupes = sorted({e for e in entries if entries.count(e) > 1})
    if dupes:
        raise ConfigError(f"objectives: {', '.join(dupes)} listed twice")
    plan = []
    for entry in entries:
        name, *pairs = entry.split(":")
        if name not in LOSSES:
            raise ConfigError(f"objectives: entry '{entry}': '{name}' is not one of {', '.join(LOSSES)}")
        item = {"label": entry, "objective": name, "learning_rate": float(learning_rate), "beta": float(beta),
                "train_options": dict(train_options or {})}
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            if not sep or not key:
                raise ConfigError(f"objectives: entry '{entry}': '{pair}' is not KEY=VALUE")
            if key == "learning_rate":
                item["learning_rate"] = _number(entry, key, raw)
            elif key == "beta":
                item["beta"] = _number(entry, key, raw)
            elif key in _FIXED:
                raise ConfigError(f"objectives: entry '{entry}': '{key}' is the same for every entry of a "
                                  "comparison; set it as a pipeline parameter")
            elif key not in _OPTIONS:
                raise ConfigError(f"objectives: entry '{entry}': unknown option '{key}'")
            else:
                item["train_options"][key] = _value(raw)
        plan.append(item)
    return plan
