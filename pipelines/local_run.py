"""The whole pipeline on this machine with KFP's local subprocess runner (no cluster, no Docker).

Components run one after another (objectives too: ``local_pipeline``) as subprocesses of this Python (``SubprocessRunner(use_venv=False)``:
the project's own environment, offline). Artifacts land under ``WORK_DIR/artifacts``; MLflow is
the sqlite store ``WORK_DIR/mlflow`` unless a tracking URI is given; the deployment is `amopo serve`
on 127.0.0.1, recorded under ``WORK_DIR/serving``. What the steps and KFP print goes to one log file
per step under ``WORK_DIR/logs/<time>/`` (``WORK_DIR/logs/latest`` points at the newest); the console
shows a line per step (pipelines/console.py), or everything as well with ``verbose``.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import warnings
from pathlib import Path

from amopo.errors import AmopoError
from pipelines.console import ANSI, Console, StepLogs, gate_reasons, read_task


class PipelineRunError(AmopoError):
    """A step of the local pipeline run failed."""


def run_local(params: dict, *, work_dir: str | Path = "runs/pipeline", verbose: bool = False) -> dict:
    work = Path(work_dir).resolve()
    (work / "artifacts").mkdir(parents=True, exist_ok=True)
    params = dict(params)
    params.setdefault("mlflow_tracking_uri", f"sqlite:///{work / 'mlflow' / 'mlflow.db'}")
    params.setdefault("local_state_dir", str(work / "serving"))
    log_dir = new_log_dir(work / "logs")
    console = None if verbose else Console(sys.stdout)
    logs = StepLogs(log_dir, artifacts=work / "artifacts", console=console, echo=sys.stdout if verbose else None)
    if console is not None:
        console.print(f"amopo pipeline (local): one log per step in {log_dir}/")
    started = time.time()
    try:
        with captured(logs, verbose=verbose):
            if params["mlflow_tracking_uri"].startswith("sqlite:///"):
                create_sqlite_store(params["mlflow_tracking_uri"])
            _run_pipeline(params, work)
    except RuntimeError as exc:
        raise PipelineRunError(f"the local pipeline run failed: {ANSI.sub('', str(exc))} "
                               f"(step logs: {log_dir}/)") from None
    finally:
        logs.close()
    summary = collect_outputs(work / "artifacts", started, params)
    summary["log_dir"] = str(log_dir)
    summary["logs"] = {task: step["log"] for task, step in logs.steps.items()}
    summary["wall_seconds"] = time.time() - started
    summary["step_seconds"] = {task: step["seconds"] for task, step in logs.steps.items()}
    return summary


def time_shares(wall_seconds: float, step_seconds: dict[str, float], *, least: float = 0.02) -> str:
    """"12m 3s: train-model 45%, evaluate-model 30%, …, 6 more 3%": the run's wall time and each step's
    share of it, largest first; steps under ``least`` of it are summed in one item."""
    from pipelines.console import duration

    wall = max(wall_seconds, 1e-9)
    big = sorted(((s, t) for t, s in step_seconds.items() if s / wall >= least), reverse=True)
    small = [s for s in step_seconds.values() if s / wall < least]
    items = [f"{task} {seconds / wall:.0%}" for seconds, task in big]
    if small:
        items.append(f"{len(small)} more {sum(small) / wall:.0%}")
    return f"{duration(wall_seconds)}: " + ", ".join(items)


def _run_pipeline(params: dict, work: Path) -> None:
    from kfp import local

    amopo_pipeline = local_pipeline()

    # Running the image's components in this environment is the point of the local run, and display
    # names are for the UI: KFP's warnings about both would only be noise here.
    warnings.filterwarnings("ignore", message="You may be attemping to run a task", category=RuntimeWarning)
    warnings.filterwarnings("ignore", message="Task .* have no effect in the current local runner")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(work / "artifacts"),
               raise_on_error=True)
    amopo_pipeline(**params)


def local_pipeline():
    """The pipeline with its objectives trained one at a time (``AMOPO_PARALLEL_OBJECTIVES``, read
    when the module is imported; 1 unless set): one machine's cores and memory are better spent on
    one training at a time, and the per-step logs stay one task's each."""
    import importlib
    import os

    import pipelines.amopo_pipeline as module

    wanted = int(os.environ.get("AMOPO_PARALLEL_OBJECTIVES", "1"))
    if module.PARALLEL_OBJECTIVES != wanted:
        saved = os.environ.get("AMOPO_PARALLEL_OBJECTIVES")
        os.environ["AMOPO_PARALLEL_OBJECTIVES"] = str(wanted)
        try:
            module = importlib.reload(module)
        finally:
            if saved is None:
                del os.environ["AMOPO_PARALLEL_OBJECTIVES"]
            else:
                os.environ["AMOPO_PARALLEL_OBJECTIVES"] = saved
    return module.amopo_pipeline


def create_sqlite_store(uri: str) -> None:
    """Create a new sqlite MLflow store's tables before any step uses it: steps running at once would
    otherwise race to create them ("table ... already exists")."""
    path = Path(uri[len("sqlite:///"):])
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        import mlflow

        mlflow.MlflowClient(uri, registry_uri=uri).search_experiments()


@contextlib.contextmanager
def captured(logs: StepLogs, *, verbose: bool):
    """Send what KFP's local runner prints to ``logs`` (the per-step log files).

    The runner (kfp 2.17) writes everything to ``sys.stdout`` as it is at the time: each task's
    subprocess output (stderr merged in) is re-printed line by line, and its own messages go through
    a logging handler it creates on ``sys.stdout`` for each task. Replacing ``sys.stdout`` for the
    run is therefore enough; no KFP function is patched. ``sys.stderr`` is replaced too (unless
    ``verbose``), so that warnings of this process (Python warnings, KFP's fallback logging) land in
    the logs rather than on the console. ``logs`` copies every line to the real stdout when verbose.
    """
    errors = contextlib.nullcontext() if verbose else contextlib.redirect_stderr(logs)
    with contextlib.redirect_stdout(logs), errors:
        yield


def new_log_dir(root: Path) -> Path:
    """A fresh ``root/<time>/`` for this run's logs; ``root/latest`` links to it (where links work)."""
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S")
    for n in range(1, 1000):
        folder = root / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            folder.mkdir()
            break
        except FileExistsError:
            continue
    latest, tmp = root / "latest", root / f".latest-{folder.name}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(folder.name)
        tmp.replace(latest)
    except OSError:
        pass
    return folder


def _task_outputs(run: Path) -> dict[str, dict]:
    """task name → {"params": output parameters, "artifacts": name → path, "metadata": name → …}. A task
    inside a ParallelFor (RUN/for-loop-N-iteration-I/TASK) counts by its first iteration."""
    tasks: dict[str, dict] = {}
    for depth in ("*", "*/*"):
        for record in sorted(run.glob(f"{depth}/executor_output.json")):
            tasks.setdefault(record.parent.name, read_task(record.parent))
    return tasks


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

    # the model that goes on to the gate: the best objective's (select-best) or the only one trained
    train_dir = get("select-best", "artifacts", "model") or get("train-model", "artifacts", "model")
    eval_dir = get("select-best", "artifacts", "results") or get("evaluate-model", "artifacts", "results")
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
        "mlflow_run_id": (get("select-best", "metadata", "model") or {}).get("mlflow_run_id")
                         or get("train-model", "params", "Output"),
        "best_objective": get("compare-objectives", "params", "Output"),
        "compared": (get("compare-objectives", "metadata", "comparison") or {}).get("objectives"),
        "comparison_dir": get("compare-objectives", "artifacts", "comparison"),
        "candidates": get("register-candidates", "params", "Output") or None,
        # the gate's metric: plain-prompt accuracy (the conditioned prompts show the chosen score)
        "heldout_accuracy": metrics.get("pref_accuracy/plain"),
        "heldout_accuracy_base": metrics.get("pref_base_accuracy/plain"),
        "gate_passed": get("gate-model", "params", "Output"),
        "gate_reasons": "; ".join(gate_reasons(get("gate-model", "artifacts", "decision"))) or None,
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


# rows the console leaves out of the comparison table (comparison.md has them all)
_DETAIL_ROWS = ("| steer ", "| judge score", "| steerability: mean slope", "| held-out margin")


def comparison_table(folder: str | None) -> str | None:
    """The first Markdown table of ``folder``/comparison.md (the objectives' figures) without its
    detail rows (per-dimension steering and judge scores, margins), or None."""
    try:
        lines = Path(folder, "comparison.md").read_text(encoding="utf-8").splitlines() if folder else []
    except OSError:
        return None
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if start is None:
        return None
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(line for line in lines[start:end] if not line.startswith(_DETAIL_ROWS))


def print_summary(summary: dict) -> None:
    """Where everything is, and what the gate, the smoke test and the promotion decided."""
    def line(label: str, value) -> None:
        if value not in (None, "", []):
            print(f"{label:<22}{value}")

    print("\n== amopo pipeline (local) ==")
    line("run folder", summary["run_dir"])
    line("model", summary["model_dir"])
    line("metrics", summary["metrics_path"])
    folders: dict[str, list[str]] = {}
    for path in summary["plots"]:
        folders.setdefault(str(Path(path).parent), []).append(Path(path).name)
    for folder, names in folders.items():
        line("plots", f"{folder}/: {', '.join(names)}")
    line("MLflow store", summary["mlflow_tracking_uri"])
    line("MLflow training run", summary["mlflow_run_id"])
    if len(summary.get("compared") or []) > 1:
        line("best objective", f"{summary['best_objective']} (of {', '.join(summary['compared'])})")
        line("comparison", summary.get("comparison_dir") and f"{summary['comparison_dir']}/comparison.md (.html; "
                                                              "all rows)")
        table = comparison_table(summary.get("comparison_dir"))
        if table:
            print(table)
    line("candidates", summary.get("candidates") and ", ".join(
        f"{label} = version {v}" for label, _, v in (c.rpartition("=") for c in summary["candidates"].split(","))))
    if summary["heldout_accuracy"] is not None:
        base = summary["heldout_accuracy_base"]
        line("held-out plain acc.", f"{summary['heldout_accuracy']:.3f}" + (f" (base model {base:.3f})" if base is not None else ""))
    if summary["gate_passed"] is not None:
        line("gate", ("passed" if summary["gate_passed"] else "rejected")
             + (f": {summary['gate_reasons']}" if summary["gate_reasons"] else ""))
    line("registered", summary["registered_uri"] and f"{summary['registered_uri']} (alias challenger)")
    line("served at", summary["endpoint_url"] and (summary["endpoint_url"] + (
        " (still running; stop: amopo pipeline stop-serving)" if summary["still_serving"] else " (stopped at the end)")))
    line("smoke test reply", summary["smoke_reply"] and repr(summary["smoke_reply"][:120]))
    if summary["promoted"] is not None:
        line("champion", f"version {summary['champion_version']}"
             + (" (this run's model, newly promoted)" if summary["promoted"] else " (unchanged)"))
    line("pipeline state", summary["final_state"])
    if summary.get("step_seconds"):
        line("wall time", time_shares(summary["wall_seconds"], summary["step_seconds"]))
    if summary.get("log_dir"):
        line("step logs", f"{summary['log_dir']}/<step>.log ({len(summary.get('logs') or {})} steps; "
                          f"the runner's own lines in pipeline.log)")


def stop_serving(state_file: str | None) -> str:
    from amopo.serving.local_deploy import stop_local_server

    files = [Path(state_file)] if state_file else sorted(Path("runs/pipeline/serving").glob("*.json"))
    stopped = [str(f) for f in files if stop_local_server(f)]
    return f"stopped: {', '.join(stopped)}" if stopped else "no running model server recorded"
