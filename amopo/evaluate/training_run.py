"""What the evaluation knows about the training run that produced a model folder.

``amopo train --output OUT`` writes the model to ``OUT/model`` and, beside it, ``OUT/metrics.json``
(with ``mlflow_run_id`` and ``mlflow_tracking_uri``), ``OUT/train_config.yaml`` (with the base
``model``) and ``OUT/history.jsonl`` (per-step metrics). Any of them may be missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class TrainingRun:
    folder: Path
    run_id: str | None
    tracking_uri: str | None
    base_model: str | None
    history: Path | None


def find_training_run(model: str) -> TrainingRun | None:
    """The training run beside a local model folder, or None when there is none."""
    path = Path(model)
    if not path.is_dir():
        return None
    folder = path.resolve().parent
    metrics_file, config_file, history = folder / "metrics.json", folder / "train_config.yaml", folder / "history.jsonl"
    if not (metrics_file.is_file() or config_file.is_file()):
        return None
    metrics, config = {}, {}
    try:
        metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else {}
        config = yaml.safe_load(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    except (json.JSONDecodeError, yaml.YAMLError):
        pass  # a damaged sibling file only loses the link, never the evaluation
    return TrainingRun(folder, metrics.get("mlflow_run_id"), metrics.get("mlflow_tracking_uri"),
                       (config or {}).get("base_model"), history if history.is_file() else None)
