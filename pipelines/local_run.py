"""The whole pipeline on this machine with KFP's local subprocess runner (no cluster, no Docker).

Components run one after another as subprocesses of this Python (``SubprocessRunner(use_venv=False)``:
the project's own environment, offline). Artifacts land under ``WORK_DIR/artifacts``; MLflow is
the sqlite store ``WORK_DIR/mlflow`` unless a tracking URI is given; the deployment is `amopo serve`
on 127.0.0.1, recorded under ``WORK_DIR/serving``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from amopo.errors import AmopoError


class PipelineRunError(AmopoError):
    """A step of the local pipeline run failed."""


def run_local(params: dict, *, work_dir: str | Path = "runs/pipeline") -> dict:
    from kfp import local

    from pipelines.amopo_pipeline import amopo_pipeline

    work = Path(work_dir).resolve()
    (work / "artifacts").mkdir(parents=True, exist_ok=True)
    params = dict(params)
    params.setdefault("mlflow_tracking_uri", f"sqlite:///{work / 'mlflow' / 'mlflow.db'}")
    params.setdefault("local_state_dir", str(work / "serving"))
    if params["mlflow_tracking_uri"].startswith("sqlite:///"):
        Path(params["mlflow_tracking_uri"][len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(work / "artifacts"),
               raise_on_error=True)
    started = time.time()
    try:
        amopo_pipeline(**params)
    except RuntimeError as exc:
        raise PipelineRunError(f"the local pipeline run failed: {exc}") from None
    return collect_outputs(work / "artifacts", started, params)


def collect_outputs(root: Path, since: float, params: dict) -> dict:
    """Read the newest run's task outputs under ``root``."""
    runs = [p for p in root.iterdir() if p.is_dir() and p.stat().st_mtime >= since - 1]
    run = max(runs, key=lambda p: p.stat().st_mtime)
    return {"run_dir": str(run), "tasks": sorted(p.name for p in run.iterdir()), "params": params}


def print_summary(summary: dict) -> None:
    print(json.dumps(summary, indent=2, default=str))


def stop_serving(state_file: str | None) -> str:
    from amopo.serving.local_deploy import stop_local_server

    files = [Path(state_file)] if state_file else sorted(Path("runs/pipeline/serving").glob("*.json"))
    stopped = [str(f) for f in files if stop_local_server(f)]
    return f"stopped: {', '.join(stopped)}" if stopped else "no running model server recorded"
