"""Smoke test: one real chat completion against the deployed endpoint."""

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def smoke_test_endpoint(url: str, model_name: str, prompt: str, result: dsl.Output[dsl.Markdown],
                        model: dsl.Input[dsl.Model] = None) -> str:
    """Fails the step unless the endpoint answers with a non-empty message; returns the reply. Then,
    where the trained ``model`` steers a dimension (its spec's steer_trained), measures the served
    steering through chat_template_kwargs: mean completion tokens with the first such dimension
    requested low and high (reported, not gated). The endpoint's bearer token, if any, comes from
    the AMOPO_SERVE_API_KEY environment variable."""
    from pathlib import Path

    from amopo.evaluate.endpoint_steering import steered_dimensions
    from amopo.serving.smoke import smoke_test, steering_lengths

    answer = smoke_test(url, model_name, prompt=prompt, api_key_env="AMOPO_SERVE_API_KEY")
    dims = steered_dimensions(Path(model.path) / "model") if model is not None else []
    steer = (steering_lengths(url, model_name, dimension=dims[0]["name"], levels=(dims[0]["low"], dims[0]["high"]),
                              api_key_env="AMOPO_SERVE_API_KEY") if dims
             else {"skipped": "the model was trained to steer no dimension"})
    if "skipped" in steer:
        steering = f"steering: not measured ({steer['skipped']})"
    else:
        lengths = ", ".join(f"level {k}: {v:.1f}" for k, v in steer["mean_completion_tokens"].items())
        steering = f"steering: mean completion tokens with verbosity requested at {lengths}"
    result.metadata.update({"steering": steer})
    Path(result.path).write_text(f"**smoke test passed** in {answer['latency_s']} s at `{answer['route']}`\n\n"
                                 f"> {answer['prompt']}\n\n{answer['reply']}\n\n{steering}\n")
    print(steering)
    print(f"smoke test passed ({answer['latency_s']} s): {answer['reply']!r}")
    return answer["reply"]
