"""Evaluation outputs: the flat metrics file, the per-sample table, and MLflow logging.

``metrics.json`` holds one finite number per "/"-joined key, so a pipeline gate can read it
without knowing the evaluation; metrics that could not be computed (NaN, e.g. a win rate with no
parseable verdict) are left out of it and listed under ``missing`` in ``report.json``.

MLflow: into the training run when its id is known (``--mlflow-run-id``, or ``mlflow_run_id`` in
the model folder's sibling ``metrics.json``), else into a new run tagged with the model, the
baseline and, when known, the training run (``amopo.train_run_id``). Evaluation settings carry an
``eval.`` prefix (the training run already holds ``model``, ``seed``, ``max_length`` …); in a new
run they are parameters, in the training run they are tags, because MLflow parameters cannot change
once logged and a model may be evaluated again with other settings (the latest evaluation's tags and
metric values are the current ones). Files go under the artifact folder ``evaluation/``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Sequence

from amopo.tracking import Run

ARTIFACT_DIR = "evaluation"


def finite_metrics(metrics: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    """The finite metrics (as floats) and the names of the others."""
    kept, missing = {}, []
    for key, value in sorted(metrics.items()):
        if value is None or not math.isfinite(float(value)):
            missing.append(key)
        else:
            kept[key] = float(value)
    return kept, missing


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


def write_samples(folder: Path, rows: Sequence[dict], name: str = "samples") -> tuple[Path, Path]:
    """``<name>.jsonl`` (one object per row) and the same table as ``<name>.csv``."""
    jsonl, table = folder / f"{name}.jsonl", folder / f"{name}.csv"
    with jsonl.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with table.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return jsonl, table


def log_to_mlflow(folder: Path, metrics: dict[str, float], params: dict, *, tracking_uri: str | None,
                  experiment: str, run_name: str | None, run_id: str | None, link_tags: dict[str, str]) -> tuple[str, str]:
    """Log metrics, ``eval.``-prefixed settings and every file of ``folder``; returns (run id, uri).

    Falls back to a new linked run when ``run_id`` is not found in the store."""
    from mlflow.exceptions import MlflowException

    try:
        # No run name when resuming: mlflow would rename the training run.
        run = Run(True, tracking_uri, experiment, None if run_id else run_name, run_id=run_id)
    except MlflowException as exc:
        if run_id is None:
            raise
        print(f"evaluate: training run {run_id} not found in {tracking_uri or 'the tracking store'} "
              f"({str(exc).splitlines()[0]}); logging to a new run linked to it")
        link_tags = {**link_tags, "amopo.train_run_id": run_id}
        run_id = None
        run = Run(True, tracking_uri, experiment, run_name)
    try:
        run.set_tags({"amopo.evaluated": "true", **link_tags})
        settings = {f"eval.{k}": ("" if v is None else str(v))[:5000] for k, v in params.items()}
        if run_id is None:
            run.log_params(settings)
        else:
            run.set_tags(settings)
        run.log_metrics(metrics)
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                sub = path.parent.relative_to(folder).as_posix()
                run.log_artifact(path, ARTIFACT_DIR if sub == "." else f"{ARTIFACT_DIR}/{sub}")
        run.end()
    except BaseException:
        run.end("FINISHED" if run_id else "FAILED")  # never mark the training run failed
        raise
    return run.run_id, run.uri
