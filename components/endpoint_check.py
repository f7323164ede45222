"""Endpoint check: the deployed endpoint scores the lm-eval tasks as the trained checkpoint does."""

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def check_endpoint(url: str, model_name: str, model: dsl.Input[dsl.Model], tasks: str, limit: int,
                   tolerance: float, result: dsl.Output[dsl.Metrics]) -> bool:
    """Runs ``tasks`` (comma-separated lm-eval tasks; empty: no check) through the endpoint's
    OpenAI routes (multiple choice via /completions with echo and logprobs) and on the trained
    folder ``model``/model, and fails the run when they disagree beyond ``tolerance``: the served
    model is not the trained one (amopo.evaluate.lm_eval_tasks.compare_endpoint_to_folder). Then, for
    a model trained to steer, asks the endpoint for each steered dimension's low and high level
    through chat_template_kwargs and logs its answers' lengths beside the checkpoint's and the share
    of equal answers (amopo.evaluate.endpoint_steering; reported, not gated; an endpoint refusing the
    field fails). The endpoint's bearer token, if any, comes from AMOPO_SERVE_API_KEY."""
    import os
    from pathlib import Path

    from amopo.evaluate.endpoint_steering import compare_steering
    from amopo.evaluate.lm_eval_tasks import compare_endpoint_to_folder

    key_env = "AMOPO_SERVE_API_KEY" if os.environ.get("AMOPO_SERVE_API_KEY") else None
    steering = compare_steering(url, model_name, Path(model.path) / "model", api_key_env=key_env)
    for dim, levels in (steering or {}).get("dimensions", {}).items():
        for level, figures in levels.items():
            for key, value in figures.items():
                result.log_metric(f"steering/{dim}/{level:g}/{key}", float(value))
            print(f"endpoint check: {dim} at {level:g} through chat_template_kwargs: "
                  f"{figures['endpoint_tokens']:.1f} tokens served, {figures['checkpoint_tokens']:.1f} from the "
                  f"checkpoint, {figures['same_answers']:.0%} the same answers")
    if steering is None:
        print("endpoint check: the model was trained to steer nothing; steering not checked")
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        print("endpoint check: no tasks, skipped")
        return False
    check = compare_endpoint_to_folder(f"{url.rstrip('/')}/openai/v1", model_name, str(Path(model.path) / "model"),
                                       names, limit=int(limit), tolerance=tolerance,
                                       api_key_env=key_env)
    for key, values in check["metrics"].items():
        result.log_metric(f"endpoint/{key}", float(values["endpoint"]))
        result.log_metric(f"checkpoint/{key}", float(values["folder"]))
    for task, same in check["same_answers"].items():
        result.log_metric(f"same_answers/{task}", float(same))
    print("endpoint check: the served model scores as the checkpoint "
          + ", ".join(f"{k} {v['endpoint']:.3f} vs {v['folder']:.3f}" for k, v in check["metrics"].items()))
    return True
