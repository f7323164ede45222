"""The whole pipeline on this machine with KFP's local subprocess runner (no cluster, no Docker).

Components run one after another as subprocesses of this Python (``SubprocessRunner(use_venv=False)``:
the project's own environment, offline). Artifacts land under ``WORK_DIR/artifacts``; MLflow is
the sqlite store ``WORK_DIR/mlflow`` unless a tracking URI is given; the deployment is `amopo serve`
on 127.0.0.1, recorded under ``WORK_DIR/serving``.
"""

from __future__ import annotations

import json
import time
import warnings
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
    # Running the image's components in this environment is the point of the local run, and display
    # names are for the UI: KFP's warnings about both would only be noise here.
    warnings.filterwarnings("ignore", message="You may be attemping to run a task", category=RuntimeWarning)
    warnings.filterwarnings("ignore", message="Task .* have no effect in the current local runner")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(work / "artifacts"),
               raise_on_error=True)
    started = time.time()
    try:
        amopo_pipeline(**params)
    except RuntimeError as exc:
        raise PipelineRunError(f"the local pipeline run failed: {exc}") from None
    return collect_outputs(work / "artifacts", started, params)


def _task_outputs(run: Path) -> dict[str, dict]:
    """task folder name → {"params": output parameters, "artifacts": name → path}."""
    tasks = {}
    for folder in sorted(p for p in run.iterdir() if p.is_dir()):
        record = folder / "executor_output.json"
        data = json.loads(record.read_text()) if record.is_file() else {}
        artifacts = {name: entry["artifacts"][0]["uri"] for name, entry in (data.get("artifacts") or {}).items()}
        tasks[folder.name] = {"params": data.get("parameterValues") or {}, "artifacts": artifacts}
    return tasks


def _gate_reasons(decision_file: str | None) -> str | None:
    """The reasons of the gate's decision (its Markdown artifact's "- " lines), joined by "; "."""
    if not decision_file or not Path(decision_file).is_file():
        return None
    lines = Path(decision_file).read_text(encoding="utf-8").splitlines()
    return "; ".join(line[2:] for line in lines if line.startswith("- "))


def _recorded_url(state_file: Path) -> str | None:
    try:
        return json.loads(state_file.read_text()).get("url")
    except (OSError, ValueError):
        return None


def collect_outputs(root: Path, since: float, params: dict) -> dict:
    """The locations and decisions of the newest run under ``root`` (the one that started at ``since``)."""
    runs = [p for p in root.iterdir() if p.is_dir() and p.stat().st_mtime >= since - 1]
    if not runs:
        raise PipelineRunError(f"no pipeline run folder appeared under {root}")
    run = max(runs, key=lambda p: p.stat().st_mtime)
    tasks = _task_outputs(run)

    def get(task: str, kind: str, name: str):
        return tasks.get(task, {}).get(kind, {}).get(name)

    train_dir, eval_dir = get("train-model", "artifacts", "model"), get("evaluate-model", "artifacts", "results")
    metrics = json.loads(Path(eval_dir, "metrics.json").read_text()) if eval_dir else {}
    endpoint = get("deploy-model", "params", "url")
    served_state = next((f for f in Path(params["local_state_dir"]).glob("*.json")
                         if endpoint and _recorded_url(f) == endpoint), Path("/nonexistent"))
    return {
        "run_dir": str(run),
        "model_dir": str(Path(train_dir, "model")) if train_dir else None,
        "metrics_path": str(Path(eval_dir, "metrics.json")) if eval_dir else None,
        "plots": [str(p) for d in (train_dir, eval_dir) if d for p in sorted(Path(d).glob("*.png"))],
        "reports": [a for t in tasks.values() for n, a in t["artifacts"].items() if n in ("curves", "report")],
        "mlflow_tracking_uri": params["mlflow_tracking_uri"],
        "mlflow_run_id": get("train-model", "params", "Output"),
        "heldout_accuracy": metrics.get("pref_accuracy/mean_dimensions"),
        "heldout_accuracy_base": metrics.get("pref_base_accuracy/mean_dimensions"),
        "gate_passed": get("gate-model", "params", "Output"),
        "gate_reasons": _gate_reasons(get("gate-model", "artifacts", "decision")),
        "registered_version": get("register-model", "params", "version"),
        "registered_uri": get("register-model", "params", "model_uri"),
        "endpoint_url": endpoint,
        "smoke_reply": get("smoke-test-endpoint", "params", "Output"),
        "promoted": get("promote-model", "params", "promoted"),
        "champion_version": get("promote-model", "params", "champion_version"),
        "still_serving": served_state.is_file(),
        "serving_state": str(served_state) if served_state.is_file() else None,
        "final_state": get("clean-up", "params", "Output"),
    }


def print_summary(summary: dict) -> None:
    """Where everything is, and what the gate, the smoke test and the promotion decided."""
    def line(label: str, value) -> None:
        if value not in (None, "", []):
            print(f"{label:<22}{value}")

    print("\n== amopo pipeline (local) ==")
    line("run folder", summary["run_dir"])
    line("model", summary["model_dir"])
    line("metrics", summary["metrics_path"])
    for path in summary["plots"]:
        line("plot", path)
    line("MLflow store", summary["mlflow_tracking_uri"])
    line("MLflow training run", summary["mlflow_run_id"])
    if summary["heldout_accuracy"] is not None:
        base = summary["heldout_accuracy_base"]
        line("held-out accuracy", f"{summary['heldout_accuracy']:.3f}" + (f" (base model {base:.3f})" if base is not None else ""))
    line("gate", ("passed" if summary["gate_passed"] else "rejected") + f": {summary['gate_reasons']}")
    line("registered", summary["registered_uri"] and f"{summary['registered_uri']} (alias challenger)")
    line("served at", summary["endpoint_url"] and (summary["endpoint_url"] + (
        " (still running; stop: amopo pipeline stop-serving)" if summary["still_serving"] else " (stopped at the end)")))
    line("smoke test reply", summary["smoke_reply"] and repr(summary["smoke_reply"][:120]))
    if summary["promoted"] is not None:
        line("champion", f"version {summary['champion_version']}"
             + (" (this run's model, newly promoted)" if summary["promoted"] else " (unchanged)"))
    line("pipeline state", summary["final_state"])


def stop_serving(state_file: str | None) -> str:
    from amopo.serving.local_deploy import stop_local_server

    files = [Path(state_file)] if state_file else sorted(Path("runs/pipeline/serving").glob("*.json"))
    stopped = [str(f) for f in files if stop_local_server(f)]
    return f"stopped: {', '.join(stopped)}" if stopped else "no running model server recorded"
