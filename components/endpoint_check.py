"""Endpoint check: the deployed endpoint scores the lm-eval tasks as the trained checkpoint does."""

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def check_endpoint(url: str, model_name: str, model: dsl.Input[dsl.Model], tasks: str, limit: int,
                   tolerance: float, result: dsl.Output[dsl.Metrics]) -> bool:
    """Runs ``tasks`` (comma-separated lm-eval tasks; empty: no check) through the endpoint's
    OpenAI routes (multiple choice via /completions with echo and logprobs) and on the trained
    folder ``model``/model, and fails the run when they disagree beyond ``tolerance``: the served
    model is not the trained one (amopo.evaluate.lm_eval_tasks.compare_endpoint_to_folder). The
    endpoint's bearer token, if any, comes from AMOPO_SERVE_API_KEY."""
    import os
    from pathlib import Path

    from amopo.evaluate.lm_eval_tasks import compare_endpoint_to_folder

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        print("endpoint check: no tasks, skipped")
        return False
    check = compare_endpoint_to_folder(f"{url.rstrip('/')}/openai/v1", model_name, str(Path(model.path) / "model"),
                                       names, limit=int(limit), tolerance=tolerance,
                                       api_key_env="AMOPO_SERVE_API_KEY" if os.environ.get("AMOPO_SERVE_API_KEY")
                                       else None)
    for key, values in check["metrics"].items():
        result.log_metric(f"endpoint/{key}", float(values["endpoint"]))
        result.log_metric(f"checkpoint/{key}", float(values["folder"]))
    for task, same in check["same_answers"].items():
        result.log_metric(f"same_answers/{task}", float(same))
    print("endpoint check: the served model scores as the checkpoint "
          + ", ".join(f"{k} {v['endpoint']:.3f} vs {v['folder']:.3f}" for k, v in check["metrics"].items()))
    return True
