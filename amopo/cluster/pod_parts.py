"""Pieces of pod specs as plain dicts (the JSON the API server takes), checked before anything is sent.

Values from users arrive as plain types (a KFP component passes strings, ints, dicts and lists), so
each helper validates its input and raises ClusterError naming the offending field.
"""

from __future__ import annotations

import re

from amopo.cluster.errors import ClusterError

# metadata.name of TrainJob (enforced by its CRD) and of an InferenceService (KServe's webhook).
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
# The resource.Quantity pattern of the CRDs' openAPIV3Schema.
QUANTITY = re.compile(r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
                      r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
GPU_RESOURCE = "nvidia.com/gpu"
# The node label NVIDIA's GPU feature discovery sets to the GPU model, e.g. NVIDIA-H100-80GB-HBM3.
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"


def check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or len(name) > 63 or not DNS_1035_LABEL.match(name):
        raise ClusterError(f"{what} name '{name}' must be a DNS-1035 label: lower-case letters, digits and '-', "
                           "starting with a letter, at most 63 characters")
    return name


def env_list(env: dict[str, str] | None, secret_env: dict[str, str] | None, where: str, *,
             optional_secrets: bool = False) -> list[dict]:
    """``env`` (NAME → value) and ``secret_env`` (NAME → "SECRET/KEY") as a container env list.

    Secret values are never read: the pod gets ``valueFrom.secretKeyRef`` and the kubelet fills them in;
    with ``optional_secrets`` a missing Secret or key leaves the variable unset instead of blocking the pod.
    """
    out: list[dict] = []
    seen: set[str] = set()

    def add(name: str, item: dict) -> None:
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise ClusterError(f"{where}: environment variable name '{name}' is not valid")
        if name in seen:
            raise ClusterError(f"{where}: environment variable '{name}' is set twice")
        seen.add(name)
        out.append(item)

    for name, value in (env or {}).items():
        add(name, {"name": name, "value": str(value)})
    for name, ref in (secret_env or {}).items():
        secret, _, key = str(ref).partition("/")
        if not SECRET_NAME.match(secret) or not key or not SECRET_KEY.match(key):
            raise ClusterError(f"{where}: secret_env['{name}'] = '{ref}' must be 'SECRET_NAME/KEY'")
        ref_item = {"name": secret, "key": key, **({"optional": True} if optional_secrets else {})}
        add(name, {"name": name, "valueFrom": {"secretKeyRef": ref_item}})
    return out


def quantity(value, field: str) -> str:
    text = str(value)
    if not QUANTITY.match(text):
        raise ClusterError(f"{field}: '{value}' is not a Kubernetes quantity (e.g. 4, 500m, 16Gi)")
    return text


def resources(*, cpu, memory, gpus: int, where: str) -> dict:
    """Requests for cpu and memory, a memory limit equal to its request, and GPUs as a limit.

    No CPU limit: throttling a data loader or a tokenizer helps nobody. GPUs are an extended
    resource, so the limit alone is enough (the request defaults to it).
    """
    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 0:
        raise ClusterError(f"{where}: gpus must be an integer >= 0, got {gpus!r}")
    req = {"cpu": quantity(cpu, f"{where}.cpu"), "memory": quantity(memory, f"{where}.memory")}
    limits = {"memory": req["memory"]}
    if gpus:
        limits[GPU_RESOURCE] = str(gpus)
    return {"requests": req, "limits": limits}


def tolerations_list(tolerations: list[dict] | None, where: str) -> list[dict]:
    out = []
    for i, tol in enumerate(tolerations or []):
        if not isinstance(tol, dict) or not tol:
            raise ClusterError(f"{where}: tolerations[{i}] must be a non-empty mapping")
        unknown = set(tol) - TOLERATION_KEYS
        if unknown:
            raise ClusterError(f"{where}: tolerations[{i}] has unknown field(s) {sorted(unknown)}; "
                               f"allowed: {sorted(TOLERATION_KEYS)}")
        out.append(dict(tol))
    return out


def node_selector_map(node_selector: dict[str, str] | None, where: str) -> dict[str, str]:
    if node_selector and not all(isinstance(k, str) and isinstance(v, str) for k, v in node_selector.items()):
        raise ClusterError(f"{where}: node_selector must map strings to strings")
    return dict(node_selector or {})


def with_accelerator(node_selector: dict[str, str] | None, accelerator_type: str) -> dict[str, str]:
    """``node_selector`` plus ``nvidia.com/gpu.product: accelerator_type`` when one is asked for."""
    out = dict(node_selector or {})
    if accelerator_type:
        out[GPU_PRODUCT_LABEL] = accelerator_type
    return out


# Kueue admits a TrainJob or an InferenceService through the LocalQueue this label names.
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def queue_labels(queue_name: str | None, where: str) -> dict[str, str]:
    """``{kueue.x-k8s.io/queue-name: queue_name}``, or nothing without a queue; ClusterError for a
    value that is not a valid label value."""
    if not queue_name:
        return {}
    if not isinstance(queue_name, str) or len(queue_name) > 63 or not _LABEL_VALUE.match(queue_name):
        raise ClusterError(f"{where}: queue_name {queue_name!r} is not a valid Kubernetes label value "
                           "(up to 63 letters, digits, '-', '_' or '.', starting and ending alphanumeric)")
    return {KUEUE_QUEUE_LABEL: queue_name}
