"""Compare: the objectives trained and evaluated side by side (one ParallelFor iteration each), on
equal terms; picks the best on a metric."""

from typing import List

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def compare_objectives(trainings: dsl.Input[List[dsl.Model]], evaluations: dsl.Input[List[dsl.Artifact]],
                       labels: list, metric: str, judge: str, judge_model_name: str, head_to_head: bool,
                       head_to_head_instructions: int, compare_options: dict, mlflow_tracking_uri: str,
                       mlflow_experiment: str,
                       comparison: dsl.Output[dsl.Artifact], metrics: dsl.Output[dsl.Metrics],
                       report: dsl.Output[dsl.HTML]) -> str:
    """Writes the comparison folder (comparison.json/.md/.html, figures, head-to-head verdicts) as
    ``comparison``, its numbers to ``metrics`` and its page to ``report``; returns the label of the
    best objective on ``metric`` ("" when none has it).

    ``trainings`` and ``evaluations``: ``dsl.Collected`` outputs of a ParallelFor (train_model's
    ``model``, evaluate_model's ``results``), in iteration order. ``labels``: one per iteration, in the
    same order: strings, or the loop's items themselves when they are dicts (their ``label``, else
    their ``objective``); empty: each training's objective. An evaluation is matched to the training
    whose model it evaluated; a label naming an objective must match the loss its training used.
    ``judge`` "" judges head-to-head with the evaluations' judge. ``compare_options``: any other
    `amopo compare` option by name. The judge's API key, if any, comes from AMOPO_JUDGE_API_KEY.
    In MLflow the comparison is a parent run (report as artifacts) with each objective's training run
    (and so its evaluation) as a child.
    """
    import json
    import os
    import shutil
    from pathlib import Path

    from amopo import config as config_lib
    from amopo.compare.compare import CompareConfig, compare
    from amopo.compare.entries import pair_evaluations

    names = [(item.get("label") or item.get("objective")) if isinstance(item, dict) else item for item in labels]
    names = [str(n) for n in names] or [str(m.metadata.get("objective", "")) for m in trainings]
    if len(names) != len(trainings):
        raise ValueError(f"compare: {len(names)} labels for {len(trainings)} trainings")
    train_dirs = [Path(m.path) for m in trainings]
    eval_dirs = pair_evaluations(train_dirs, [Path(e.path) for e in evaluations])
    options = {**compare_options, "entries": [f"{n}={t},{e}" for n, t, e in zip(names, train_dirs, eval_dirs)],
               "output": comparison.path, "metric": metric, "judge": judge, "judge_model_name": judge_model_name or None,
               "head_to_head": head_to_head, "head_to_head_instructions": int(head_to_head_instructions)}
    if os.environ.get("AMOPO_JUDGE_API_KEY"):
        options["judge_api_key_env"] = "AMOPO_JUDGE_API_KEY"
    summary = compare(config_lib.from_dict(CompareConfig, options, "compare options"))

    flat = json.loads((Path(comparison.path) / "comparison.json").read_text())
    for key, value in sorted(flat.items()):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics.log_metric(key, float(value))
    from amopo.compare.tracking import log_comparison

    parent = log_comparison(Path(comparison.path), train_dirs, names, tracking_uri=mlflow_tracking_uri or None,
                            experiment=mlflow_experiment)
    comparison.metadata.update({"best": summary["best"] or "", "metric": metric, "objectives": names,
                                "mlflow_run_id": parent})
    shutil.copyfile(Path(comparison.path) / "comparison.html", report.path)
    print(summary["best_reason"])
    return summary["best"] or ""
