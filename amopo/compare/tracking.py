"""The comparison in MLflow: one parent run holding the report, each objective's training run (which
its evaluation logs into as well) nested under it as a child (tag ``mlflow.parentRunId``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

from amopo.tracking import Run

_NOT_IN_METRIC_NAMES = re.compile(r"[^A-Za-z0-9_\-. :/]")


def metric_name(key: str) -> str:
    """``key`` with the characters MLflow refuses in metric names (e.g. '=' of ``amopo:weighting=uniform``)
    replaced by '_'."""
    return _NOT_IN_METRIC_NAMES.sub("_", key)


def log_comparison(comparison_dir: Path, train_dirs: Sequence[Path], labels: Sequence[str], *,
                   tracking_uri: str | None, experiment: str, run_name: str = "comparison") -> str:
    """Create the parent run, attach the children, log the report; returns the parent's run id."""
    import mlflow

    comparison_dir = Path(comparison_dir)
    flat = json.loads((comparison_dir / "comparison.json").read_text(encoding="utf-8"))
    parent = Run(True, tracking_uri, experiment, run_name,
                 tags={"amopo.kind": "comparison", "amopo.best": str(flat.get("best") or ""),
                       "amopo.objectives": ",".join(labels)})
    client = mlflow.MlflowClient(parent.uri)
    for label, train_dir in zip(labels, train_dirs):
        child = json.loads(Path(train_dir, "metrics.json").read_text(encoding="utf-8")).get("mlflow_run_id")
        if child:
            client.set_tag(child, "mlflow.parentRunId", parent.run_id)
            client.set_tag(child, "amopo.comparison_label", label)
    parent.log_metrics({metric_name(k): float(v) for k, v in flat.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
    for item in sorted(comparison_dir.iterdir()):
        if item.is_file():
            parent.log_artifact(item, "comparison")
    parent.end()
    return parent.run_id
