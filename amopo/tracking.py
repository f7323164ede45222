"""MLflow tracking: the embedded default store, and a run that only the main process writes to.

Tracking URI, in order: the explicit one, ``$MLFLOW_TRACKING_URI``, else the embedded store: a sqlite
file and an artifact folder under ``runs/mlflow`` (relative to the working directory).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

EMBEDDED_DIR = Path("runs") / "mlflow"


def embedded_uri(folder: str | Path = EMBEDDED_DIR) -> str:
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def resolve_uri(explicit: str | None = None) -> str:
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or embedded_uri()


def _experiment_id(mlflow, name: str, uri: str) -> str:
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:///"):
        # Keep artifacts beside the sqlite file instead of in ./mlruns.
        artifact_location = (Path(uri[len("sqlite:///"):]).parent / "artifacts").as_uri()
    return mlflow.create_experiment(name, artifact_location=artifact_location)


class Run:
    """An MLflow run on the main process; a no-op on the others."""

    def __init__(self, active: bool, uri: str | None = None, experiment: str = "amopo",
                 run_name: str | None = None, run_id: str | None = None, tags: dict | None = None):
        self.active = active
        self.run_id: str | None = None
        self.uri = None
        if not active:
            return
        import mlflow

        self._mlflow = mlflow
        self.uri = resolve_uri(uri)
        mlflow.set_tracking_uri(self.uri)
        exp_id = _experiment_id(mlflow, experiment, self.uri)
        run = mlflow.start_run(run_id=run_id, experiment_id=None if run_id else exp_id, run_name=run_name,
                               tags=tags)
        self.run_id = run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        if self.active:
            flat = {k: ("" if v is None else str(v))[:6000] for k, v in params.items()}
            self._mlflow.log_params(flat)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.active:
            self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.active:
            self._mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_text(self, text: str, name: str) -> None:
        if self.active:
            self._mlflow.log_text(text, name)

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.active:
            self._mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def end(self, status: str = "FINISHED") -> None:
        if self.active:
            self._mlflow.end_run(status=status)
            self.active = False
