"""Deploy: serve a registered version — a KServe InferenceService on a cluster, `amopo serve` locally."""

from typing import NamedTuple

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy_model(model_uri: str, storage_uri: str, target: str, service_name: str, mlflow_tracking_uri: str,
                 namespace: str, runtime: str, image: str, gpus: int, cpu: str, memory: str, accelerator_type: str,
                 node_selector: dict,
                 tolerations: list, canary_traffic_percent: int, service_account: str, state_dir: str, run_id: str,
                 timeout_minutes: int, queue_name: str, registry: str = "mlflow", model_registry_url: str = ""
                 ) -> NamedTuple("DeployOutputs", url=str, model_name=str):
    """target "kserve": create or patch InferenceService ``service_name`` in ``namespace`` (runtime
    "huggingface" on ``storage_uri``, or "custom" = our image serving it; ``canary_traffic_percent``
    1-99 routes that share to the new revision, 0 or 100 all of it) and wait until Ready; its pods
    request ``cpu``, ``memory`` (also the limit) and ``gpus`` NVIDIA GPUs and go to nodes matching ``node_selector`` (plus ``nvidia.com/gpu.product: accelerator_type`` when set)
    and ``tolerations``; ``queue_name`` puts it in that Kueue LocalQueue.
    target "local": start `amopo serve` on 127.0.0.1 with ``model_uri``, recorded in
    ``state_dir``/``run_id``.json so the clean-up step can stop it. Returns the base URL and the
    served model name.
    ``registry`` "kubeflow": ``model_uri`` is looked up in the Kubeflow Model Registry at
    ``model_registry_url``; its model artifact's URI is what is served (the storageUri, or the local
    folder)."""
    from collections import namedtuple
    from pathlib import Path

    outputs = namedtuple("DeployOutputs", ["url", "model_name"])
    if registry == "kubeflow":
        from amopo.registry.kubeflow import local_path
        from amopo.registry.resolve import resolve

        storage_uri = resolve(model_uri, registry=registry, model_registry_url=model_registry_url).hf_artifact_uri
        print(f"{model_uri} in the Kubeflow Model Registry: {storage_uri}")
        model_uri = local_path(storage_uri)
    elif registry != "mlflow":
        raise ValueError(f"registry must be 'mlflow' or 'kubeflow', got {registry!r}")
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
