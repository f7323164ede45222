"""The pod of each step of a run, as the KFP backend will make it from the compiled pipeline: the main
container's image and resources, the Secrets it reads, the volumes it mounts and where it may run,
in the run's namespace under the run's ServiceAccount.

Resources follow the KFP driver: a ``{{$.inputs.parameters[...]}}`` placeholder takes the string
value of that input, and an accelerator is added only when its type and its count are both
non-empty, so an empty GPU count asks for no GPU. KFP's own parts of the pod (its launcher init
container, the command that runs the component) are left out. A platform setting this module does
not know is an error rather than a silent omission.
"""

from __future__ import annotations

import re

from amopo.errors import ConfigError
from pipelines.compiled_tasks import ContainerTask

KNOWN_PLATFORM_FIELDS = {"secretAsEnv", "pvcMount", "nodeSelector", "tolerations"}
MAIN_CONTAINER = "main"


def _pod_name(run_name: str, task: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", f"{run_name}-{task}".lower()).strip("-")
    return name[:63].rstrip("-")


def _resources(task: ContainerTask, spec: dict) -> dict:
    requests, limits = {}, {}
    for field, bucket, key in (("resourceCpuRequest", requests, "cpu"), ("resourceMemoryRequest", requests, "memory"),
                               ("resourceCpuLimit", limits, "cpu"), ("resourceMemoryLimit", limits, "memory")):
        if spec.get(field):
            bucket[key] = str(task.resolve(spec[field]))
    accelerator = spec.get("accelerator") or {}
    kind = str(task.resolve(accelerator["resourceType"])) if accelerator.get("resourceType") else \
        accelerator.get("type", "")
    count = str(task.resolve(accelerator["resourceCount"])) if accelerator.get("resourceCount") else \
        (str(accelerator["count"]) if accelerator.get("count") else "")
    if kind and count:
        limits[kind] = count
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def _parameter(task: ContainerTask, spec_in: dict) -> object:
    """A kfp-kubernetes setting's value: it names an input of the DAG around the task, not of the task."""
    if "componentInputParameter" in spec_in:
        name = spec_in["componentInputParameter"]
        if name not in task.scope:
            raise ConfigError(f"task {task.name}: a platform setting refers to {name!r}, which the DAG around "
                              "it lacks")
        return task.scope[name]
    if "runtimeValue" in spec_in:
        return spec_in["runtimeValue"].get("constant")
    raise ConfigError(f"task {task.name}: a platform setting comes from {sorted(spec_in)}, which the dry run "
                      "cannot resolve")


def step_pod(task: ContainerTask, container_spec: dict, platform: dict, *, namespace: str,
             service_account: str | None, run_name: str) -> dict:
    """The Pod of ``task`` (its executor's ``container_spec`` and kubernetes ``platform`` settings)."""
    unknown = set(platform) - KNOWN_PLATFORM_FIELDS
    if unknown:
        raise ConfigError(f"task {task.name}: platform setting(s) {sorted(unknown)} are not rendered by the dry run")
    container: dict = {"name": MAIN_CONTAINER, "image": str(task.resolve(container_spec["image"]))}
    resources = _resources(task, container_spec.get("resources") or {})
    if resources:
        container["resources"] = resources
    env = []
    for secret in platform.get("secretAsEnv", []):
        name = _parameter(task, secret["secretNameParameter"]) if "secretNameParameter" in secret else \
            secret["secretName"]
        for pair in secret["keyToEnv"]:
            ref = {"name": name, "key": pair["secretKey"], **({"optional": True} if secret.get("optional") else {})}
            env.append({"name": pair["envVar"], "valueFrom": {"secretKeyRef": ref}})
    if env:
        container["env"] = env
    pod_spec: dict = {"restartPolicy": "Never", "containers": [container]}
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    volumes, mounts = [], []
    for i, pvc in enumerate(platform.get("pvcMount", [])):
        claim = _parameter(task, pvc["pvcNameParameter"]) if "pvcNameParameter" in pvc else pvc["constant"]
        volumes.append({"name": f"pvc-{i}", "persistentVolumeClaim": {"claimName": str(claim)}})
        mounts.append({"name": f"pvc-{i}", "mountPath": pvc["mountPath"]})
    if volumes:
        pod_spec["volumes"] = volumes
        container["volumeMounts"] = mounts
    selector = platform.get("nodeSelector") or {}
    labels = _parameter(task, selector["nodeSelectorJson"]) if "nodeSelectorJson" in selector else \
        selector.get("labels", {})
    if labels:
        pod_spec["nodeSelector"] = dict(labels)
    tolerations = []
    for entry in platform.get("tolerations", []):
        value = _parameter(task, entry["tolerationJson"]) if "tolerationJson" in entry else entry
        tolerations += value if isinstance(value, list) else [value]
    if tolerations:
        pod_spec["tolerations"] = tolerations
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": _pod_name(run_name, task.name), "namespace": namespace,
                         "labels": {"app.kubernetes.io/name": "amopo", "amopo.dev/step": task.name}},
            "spec": pod_spec}


def step_pods(spec: dict, platform_spec: dict, tasks: list[ContainerTask], *, namespace: str,
              service_account: str | None, run_name: str) -> list[dict]:
    """The Pod of every task of ``tasks`` (from :func:`pipelines.compiled_tasks.container_tasks`)."""
    executors = spec["deploymentSpec"]["executors"]
    platform = (platform_spec.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {})
                .get("executors", {}))
    return [step_pod(t, executors[t.executor]["container"], platform.get(t.executor, {}), namespace=namespace,
                     service_account=service_account, run_name=run_name) for t in tasks]
