"""Evaluate: held-out preference accuracy, judged win rates against the base model, per-dimension
scores, steerability (for a conditioned model) and lm-eval tasks, with plots."""

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate_model(model: dsl.Input[dsl.Model], dataset: dsl.Input[dsl.Dataset], judge: str, judge_model_name: str,
                   dimensions: str, num_instructions: int, max_new_tokens: int, lm_eval_tasks: str,
                   lm_eval_limit: int, heldout_max_pairs: int, eval_options: dict, mlflow_tracking_uri: str,
                   results: dsl.Output[dsl.Artifact], metrics: dsl.Output[dsl.Metrics],
                   report: dsl.Output[dsl.HTML]) -> float:
    """Writes the evaluation folder (metrics.json, report.json, samples, plots) as ``results``, every
    flat metric to ``metrics`` and a page with the plots to ``report``; returns the mean held-out
    preference accuracy over the dimensions. The judge's API key, if any, comes from the
    AMOPO_JUDGE_API_KEY environment variable (a Kubernetes Secret on a cluster)."""
    import os
    from pathlib import Path

    from amopo import config as config_lib
    from amopo.evaluate.evaluate import EvaluateConfig, evaluate
    from amopo.report_html import html_page

    options = {**eval_options, "model": str(Path(model.path) / "model"), "data": dataset.path,
               "judge": judge, "judge_model_name": judge_model_name or None, "num_instructions": num_instructions,
               "max_new_tokens": max_new_tokens, "lm_eval_limit": lm_eval_limit, "heldout_max_pairs": heldout_max_pairs,
               "lm_eval_tasks": [t.strip() for t in lm_eval_tasks.split(",") if t.strip()],
               "mlflow_tracking_uri": mlflow_tracking_uri or None, "output": results.path}
    if dimensions.strip():
        options["dimensions"] = [d.strip() for d in dimensions.split(",") if d.strip()]
    if os.environ.get("AMOPO_JUDGE_API_KEY"):
        options["judge_api_key_env"] = "AMOPO_JUDGE_API_KEY"
    cfg = config_lib.from_dict(EvaluateConfig, options, "eval options")
    cfg.validate()
    summary = evaluate(cfg)

    import json

    flat = json.loads((Path(results.path) / "metrics.json").read_text())
    for key, value in sorted(flat.items()):
        metrics.log_metric(key, float(value))
    headline = {k: flat[k] for k in ("pref_accuracy/plain", "pref_base_accuracy/plain",
                                     "pref_accuracy/mean_dimensions", "pref_base_accuracy/mean_dimensions",
                                     "winrate/raw", "winrate/lc", "dimension/mean_delta", "steer/mean_spearman",
                                     "steer_base/mean_spearman", "steer/accuracy", "steer_base/accuracy") if k in flat}
    out = Path(results.path)
    Path(report.path).write_text(html_page(
        "Evaluation", table={**headline, "MLflow run": summary.get("mlflow_run_id")},
        figures=[out / "dimension_radar.png", out / "win_rates.png", out / "steerability.png",
                 out / "training_curves.png"]))
    return float(flat.get("pref_accuracy/mean_dimensions", float("nan")))
