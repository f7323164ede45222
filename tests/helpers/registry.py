"""A training output folder laid out as `amopo train` writes it, built around the tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def make_training_output(root: Path, model_dir: Path, *, final_accuracy: float = 0.75,
                         run_id: str = "train-run-1", loss: str = "amopo") -> Path:
    """OUTPUT/model (a copy of ``model_dir``), OUTPUT/metrics.json (nested) and OUTPUT/train_config.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(model_dir, root / "model", dirs_exist_ok=True)
    summary = {
        "objective": loss, "dimensions": ["overall", "helpfulness"], "train_pairs": 16, "total_steps": 4,
        "world_size": 1, "steps": 4,
        "heldout_base": {"accuracy/overall": 0.5, "accuracy/mean_dimensions": 0.5},
        "heldout_final": {"accuracy/overall": final_accuracy, "accuracy/mean_dimensions": final_accuracy},
        "model_dir": str(root / "model"), "metrics_path": str(root / "metrics.json"),
        "mlflow_run_id": run_id, "mlflow_tracking_uri": "sqlite:///elsewhere.db",
    }
    (root / "metrics.json").write_text(json.dumps(summary, indent=2))
    (root / "train_config.yaml").write_text(f"base_model: embedded:smollm2-135m-instruct\nobjective: {loss}\n")
    return root


def write_eval_metrics(path: Path, **metrics: float) -> Path:
    """A flat eval metrics.json as `amopo evaluate` writes it (keys use "/" as the kwargs use "__")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k.replace("__", "/"): v for k, v in metrics.items()}))
    return path
