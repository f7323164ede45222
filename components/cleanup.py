"""Clean-up, run whatever happened to the rest of the pipeline (the DAG's exit handler)."""

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def clean_up(status: dsl.PipelineTaskFinalStatus, target: str, state_dir: str, run_id: str, keep_serving: bool) -> str:
    """Locally: stop the run's `amopo serve` unless ``keep_serving`` and the run succeeded. On a
    cluster the InferenceService is the product and stays. Returns the pipeline's final state."""
    from pathlib import Path

    state = status.state
    print(f"pipeline {status.pipeline_job_resource_name or run_id}: {state}"
          + (f" ({status.error_message})" if status.error_message else ""))
    if target == "local":
        from amopo.serving.local_deploy import stop_local_server

        record = Path(state_dir) / f"{run_id}.json"
        if keep_serving and state == "SUCCEEDED" and record.is_file():
            print(f"the model server keeps running; stop it with: amopo pipeline stop-serving {record}")
        elif stop_local_server(record):
            print("stopped the local model server")
    return state
