"""Smoke test: one real chat completion against the deployed endpoint."""

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def smoke_test_endpoint(url: str, model_name: str, prompt: str, result: dsl.Output[dsl.Markdown]) -> str:
    """Fails the step unless the endpoint answers with a non-empty message; returns the reply. The
    endpoint's bearer token, if any, comes from the AMOPO_SERVE_API_KEY environment variable."""
    from pathlib import Path

    from amopo.serving.smoke import smoke_test

    answer = smoke_test(url, model_name, prompt=prompt, api_key_env="AMOPO_SERVE_API_KEY")
    Path(result.path).write_text(f"**smoke test passed** in {answer['latency_s']} s at `{answer['route']}`\n\n"
                                 f"> {answer['prompt']}\n\n{answer['reply']}\n")
    print(f"smoke test passed ({answer['latency_s']} s): {answer['reply']!r}")
    return answer["reply"]
