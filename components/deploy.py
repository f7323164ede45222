"""Deploy: serve a registered version — a KServe InferenceService on a cluster, `amopo serve` locally."""

from typing import NamedTuple

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy_model(model_uri: str, storage_uri: str, target: str, service_name: str, mlflow_tracking_uri: str,
                 namespace: str, runtime: str, image: str, gpus: int, cpu: str, memory: str, accelerator_type: str,
                 node_selector: dict,
                 tolerations: list, canary_traffic_percent: int, service_account: str, state_dir: str, run_id: str,
                 timeout_minutes: int, queue_name: str
                 ) -> NamedTuple("DeployOutputs", url=str, model_name=str):
    """target "kserve": create or patch InferenceService ``service_name`` in ``namespace`` (runtime
    "huggingface" on ``storage_uri``, or "custom" = our image serving it; ``canary_traffic_percent``
    1-99 routes that share to the new revision, 0 or 100 all of it) and wait until Ready; its pods
    request ``cpu``, ``memory`` (also the limit) and ``gpus`` NVIDIA GPUs and go to nodes matching ``node_selector`` (plus ``nvidia.com/gpu.product: accelerator_type`` when set)
    and ``tolerations``; ``queue_name`` puts it in that Kueue LocalQueue.
    target "local": start `amopo serve` on 127.0.0.1 with ``model_uri``, recorded in
    ``state_dir``/``run_id``.json so the clean-up step can stop it. Returns the base URL and the
    served model name."""
    from collections import namedtuple
    from pathlib import Path

    outputs = namedtuple("DeployOutputs", ["url", "model_name"])
    if target == "local":
        from amopo.serving.local_deploy import start_local_server

        state = start_local_server(model_uri, Path(state_dir) / f"{run_id}.json", model_name=service_name,
                                   tracking_uri=mlflow_tracking_uri or None, timeout_s=timeout_minutes * 60.0)
        print(f"serving {model_uri} at {state['url']} (log {state['log_path']})")
        return outputs(state["url"], service_name)
    if target == "kserve":
        from amopo.cluster.inferenceservice import deploy_inferenceservice, deploy_step_manifest

        manifest = deploy_step_manifest(
            service_name=service_name, namespace=namespace, storage_uri=storage_uri, runtime=runtime, image=image,
            gpus=gpus, cpu=cpu, memory=memory, accelerator_type=accelerator_type, node_selector=node_selector,
            tolerations=tolerations, canary_traffic_percent=canary_traffic_percent,
            service_account=service_account, queue_name=queue_name)
        result = deploy_inferenceservice(manifest, timeout_s=timeout_minutes * 60.0)
        # the cluster-local address: what the smoke-test pod can reach without the ingress' DNS
        return outputs(result["address_url"] or result["url"], service_name)
    raise ValueError(f"target must be 'local' or 'kserve', got {target!r}")
