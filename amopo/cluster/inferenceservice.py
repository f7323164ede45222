"""A KServe ``InferenceService`` (serving.kserve.io/v1beta1) for a trained model: built with the kserve
SDK's models, deployed (create, or patch to roll out a new version, optionally as a canary) and
followed until Ready.

Runtimes:
    huggingface   KServe's Hugging Face runtime (``modelFormat: huggingface``) loading ``storage_uri``
                  (e.g. the registered model's ``.../model`` folder): the GPU path.
    custom        this project's image running ``amopo serve --model /mnt/models --model-name NAME
                  --host 0.0.0.0 --port 8080`` in the ``kserve-container``; KServe's storage
                  initializer downloads ``storage_uri`` (given as the container's STORAGE_URI
                  variable) into /mnt/models first.
"""

from __future__ import annotations

import copy
import time
from typing import Callable

from amopo.cluster.errors import ClusterError
from amopo.cluster.kube import api_error_text, find_condition, load_kube_client
from amopo.cluster.pod_parts import check_name, env_list, node_selector_map, queue_labels, resources, tolerations_list

GROUP, VERSION, PLURAL, KIND = "serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService"
RUNTIMES = ("huggingface", "custom")
CUSTOM_CONTAINER = "kserve-container"  # the name KServe's webhook looks for (storage, ports)
MODEL_MOUNT = "/mnt/models"
SERVE_PORT = 8080
# Ready=False reasons KServe reports while a rollout is still under way (raw deployment mode copies
# the Deployment's Available condition); anything else False with a reason ends the wait at once.
ROLLOUT_REASONS = {"MinimumReplicasUnavailable", "Progressing", "RevisionMissing"}
# modelStatus.transitionStatus values that mean the model will not load without a change.
BLOCKED_TRANSITIONS = {"BlockedByFailedLoad", "InvalidSpec"}


def _kserve():
    from amopo.serving.kserve_compat import kserve  # imports kserve without it parsing sys.argv

    return kserve


def inferenceservice_manifest(name: str, namespace: str, storage_uri: str, *, runtime: str = "huggingface",
                              image: str | None = None, model_name: str | None = None, gpus: int = 1,
                              cpu: str = "2", memory: str = "8Gi", canary_traffic_percent: int | None = None,
                              service_account: str | None = None, env: dict[str, str] | None = None,
                              secret_env: dict[str, str] | None = None, args: list[str] | None = None,
                              node_selector: dict[str, str] | None = None, tolerations: list[dict] | None = None,
                              min_replicas: int | None = None, max_replicas: int | None = None,
                              labels: dict[str, str] | None = None, queue_name: str | None = None) -> dict:
    """The InferenceService as a JSON-ready dict (validates against KServe's CRD schema).

    name, namespace     metadata; ``name`` must be a DNS-1035 label.
    storage_uri         where the model folder is (s3://, gs://, pvc://, hf://, https://).
    runtime             ``huggingface`` | ``custom`` (needs ``image``); see the module docstring.
    model_name          the name it is served under (URL paths, OpenAI ``model``); custom only,
                        default ``name`` (the Hugging Face runtime always uses ``name``).
    gpus                ``nvidia.com/gpu`` limit (0 = CPU); cpu, memory: requests (memory also the limit).
    canary_traffic_percent  share of traffic for the new revision when an existing service is
                        updated (KServe ignores it on first creation); None = all traffic.
    service_account     for storage credentials (e.g. an S3 secret annotated for KServe).
    env / secret_env    NAME → value / NAME → ``"SECRET/KEY"`` (secret values are never read here).
    args                extra arguments for the server (appended to the runtime's own, or to ``amopo serve``).
    node_selector, tolerations, min_replicas, max_replicas, labels: as in a pod / predictor spec.
    queue_name          the Kueue LocalQueue that admits it (label kueue.x-k8s.io/queue-name).
    Raises ClusterError on invalid values.
    """
    check_name(name, "InferenceService")
    where = f"InferenceService {namespace}/{name}"
    if runtime not in RUNTIMES:
        raise ClusterError(f"{where}: runtime '{runtime}' is not one of {', '.join(RUNTIMES)}")
    if not storage_uri:
        raise ClusterError(f"{where}: storage_uri is required")
    if runtime == "custom" and not image:
        raise ClusterError(f"{where}: runtime 'custom' needs image (the amopo image)")
    if canary_traffic_percent is not None and not (isinstance(canary_traffic_percent, int)
                                                   and 0 <= canary_traffic_percent <= 100):
        raise ClusterError(f"{where}: canary_traffic_percent must be an integer in 0..100, "
                           f"got {canary_traffic_percent!r}")
    kserve = _kserve()
    from kubernetes import client as k8s

    res = resources(cpu=cpu, memory=memory, gpus=gpus, where=where)
    env_items = env_list(env, secret_env, where)
    extra_args = [str(a) for a in args or []]
    predictor = kserve.V1beta1PredictorSpec(
        canary_traffic_percent=canary_traffic_percent,
        service_account_name=service_account,
        node_selector=node_selector_map(node_selector, where) or None,
        tolerations=tolerations_list(tolerations, where) or None,
        min_replicas=min_replicas, max_replicas=max_replicas,
    )
    if runtime == "huggingface":
        predictor.model = kserve.V1beta1ModelSpec(
            model_format=kserve.V1beta1ModelFormat(name="huggingface"),
            storage_uri=storage_uri, args=extra_args or None, env=env_items or None,
            resources=k8s.V1ResourceRequirements(**res))
        predictor.model.name = None  # the SDK's default "" would be sent as an empty container name
    else:
        serve_args = ["--model", MODEL_MOUNT, "--model-name", model_name or name, "--host", "0.0.0.0",
                      "--port", str(SERVE_PORT), *extra_args]
        predictor.containers = [k8s.V1Container(
            name=CUSTOM_CONTAINER, image=image, command=["amopo", "serve"], args=serve_args,
            env=[{"name": "STORAGE_URI", "value": storage_uri}, *env_items],
            ports=[k8s.V1ContainerPort(container_port=SERVE_PORT, protocol="TCP")],
            readiness_probe=k8s.V1Probe(http_get=k8s.V1HTTPGetAction(path="/v2/health/ready", port=SERVE_PORT),
                                        period_seconds=10),
            resources=k8s.V1ResourceRequirements(**res))]
    isvc = kserve.V1beta1InferenceService(
        api_version=f"{GROUP}/{VERSION}", kind=KIND,
        metadata=k8s.V1ObjectMeta(name=name, namespace=namespace, labels={
            "app.kubernetes.io/name": "amopo", "app.kubernetes.io/component": "serve", **(labels or {}),
            **queue_labels(queue_name, f"InferenceService {namespace}/{name}")}),
        spec=kserve.V1beta1InferenceServiceSpec(predictor=predictor))
    return k8s.ApiClient().sanitize_for_serialization(isvc)


def deploy_step_manifest(*, service_name: str, namespace: str, storage_uri: str, runtime: str, image: str,
                         gpus: int, cpu: str, memory: str, accelerator_type: str, node_selector: dict,
                         tolerations: list, canary_traffic_percent: int, service_account: str,
                         queue_name: str) -> dict:
    """The InferenceService the deploy step creates, from its inputs (named as the component names
    them): the one mapping the step and `amopo pipeline submit --dry-run` share.

    A ``canary_traffic_percent`` of 0 or 100 sends all traffic to the new revision; ``accelerator_type``
    (the GPU-product node label) applies only with ``gpus``; empty strings are unset values.
    """
    from amopo.cluster.pod_parts import with_accelerator

    return inferenceservice_manifest(
        service_name, namespace, storage_uri, runtime=runtime, image=image or None, gpus=gpus, cpu=cpu,
        memory=memory, canary_traffic_percent=canary_traffic_percent if 0 < canary_traffic_percent < 100 else None,
        service_account=service_account or None, tolerations=tolerations,
        node_selector=with_accelerator(node_selector, accelerator_type if gpus else ""),
        queue_name=queue_name or None)


def isvc_state(obj: dict) -> tuple[str, str, str]:
    """(state, reason, message) of an InferenceService dict: state is ``ready``, ``failed`` or ``waiting``.

    ready: the Ready condition is True and ``status.observedGeneration`` has caught up with
    ``metadata.generation`` (so a Ready left over from the previous spec does not count).
    failed: ``modelStatus.transitionStatus`` is BlockedByFailedLoad/InvalidSpec, or Ready is False
    with a reason that is not one of :data:`ROLLOUT_REASONS`.
    """
    status = obj.get("status") or {}
    model = status.get("modelStatus") or {}
    if model.get("transitionStatus") in BLOCKED_TRANSITIONS:
        info = model.get("lastFailureInfo") or {}
        return "failed", info.get("reason") or model["transitionStatus"], info.get("message") or ""
    ready = find_condition(obj, "Ready")
    if ready is None:
        return "waiting", "", ""
    reason, message = ready.get("reason") or "", ready.get("message") or ""
    if ready.get("status") == "True":
        generation = (obj.get("metadata") or {}).get("generation")
        observed = status.get("observedGeneration")
        if generation is not None and observed is not None and observed < generation:
            return "waiting", "ObservedGenerationBehind", f"observed generation {observed} < {generation}"
        return "ready", reason, message
    if ready.get("status") == "False" and reason and reason not in ROLLOUT_REASONS:
        if not message:  # KServe often leaves the detail on the sub-condition that failed
            for cond in status.get("conditions") or []:
                if cond.get("status") == "False" and cond.get("message"):
                    message = cond["message"]
                    break
        return "failed", reason, message
    return "waiting", reason, message


def deploy_inferenceservice(manifest: dict, *, api_client=None, timeout_s: float = 1200.0, poll_s: float = 5.0,
                            log: Callable[[str], None] = print) -> dict:
    """Create the InferenceService ``manifest``, or merge-patch it if one of that name exists, and wait
    until it is Ready.

    On update, ``spec.predictor.canaryTrafficPercent`` is sent as given, or as null (removed: all
    traffic to the new revision) when the manifest has none. Returns ``{"name", "namespace", "url",
    "address_url", "action": "created" | "updated", "duration_s"}`` where ``url`` is ``status.url``
    (else ``status.address.url``). Raises ClusterError with the reason/message of a failed
    condition (see :func:`isvc_state`) or after ``timeout_s`` (with the last reason seen); the
    service is never deleted here, since a failed update must not take down the serving version.

    Talks to the API through ``kubernetes.client.CustomObjectsApi`` on ``api_client`` (default
    :func:`load_kube_client`): ``kserve.KServeClient`` always loads the global kube configuration
    and cannot be given an ApiClient, and it wraps API errors in RuntimeError, hiding the 404 that
    tells create from update. Readiness follows ``KServeClient.is_isvc_ready`` (Ready condition and
    observed generation).
    """
    from kubernetes import client
    from kubernetes.client import ApiException

    api_client = api_client or load_kube_client()
    objects = client.CustomObjectsApi(api_client)
    name = manifest["metadata"]["name"]
    namespace = manifest["metadata"].get("namespace") or "default"
    where = f"{KIND} {namespace}/{name}"

    def fail(text: str, **kw) -> ClusterError:
        return ClusterError(f"{where}: {text}", kind=KIND, namespace=namespace, name=name, **kw)

    try:
        objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        exists = True
    except ApiException as exc:
        if exc.status != 404:
            raise fail(f"cannot read it ({api_error_text(exc)})") from None
        exists = False
    try:
        if exists:
            body = copy.deepcopy(manifest)
            body["spec"]["predictor"].setdefault("canaryTrafficPercent", None)
            objects.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body)
        else:
            objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    except ApiException as exc:
        raise fail(f"{'patch' if exists else 'create'} failed ({api_error_text(exc)})") from None
    action = "updated" if exists else "created"
    canary = manifest["spec"]["predictor"].get("canaryTrafficPercent")
    log(f"{where}: {action}" + (f" (canary {canary}% of traffic)" if exists and canary is not None else "")
        + "; waiting for Ready")

    ready = wait_until_ready(namespace, name, api_client=api_client, timeout_s=timeout_s, poll_s=poll_s, log=log)
    return {"name": name, "namespace": namespace, "url": ready["url"], "address_url": ready["address_url"],
            "action": action, "duration_s": ready["duration_s"]}


def wait_until_ready(namespace: str, name: str, *, api_client=None, timeout_s: float = 1200.0, poll_s: float = 5.0,
                     log: Callable[[str], None] = print) -> dict:
    """Poll InferenceService ``namespace``/``name`` until it is Ready (see :func:`isvc_state`: the Ready
    condition for the current generation). Returns ``{"url", "address_url", "duration_s"}``; raises
    ClusterError with the reason/message of a failed condition, after ``timeout_s`` (with the last
    reason seen), or when the service disappears."""
    from kubernetes import client
    from kubernetes.client import ApiException

    objects = client.CustomObjectsApi(api_client or load_kube_client())
    where = f"{KIND} {namespace}/{name}"

    def fail(text: str, **kw) -> ClusterError:
        return ClusterError(f"{where}: {text}", kind=KIND, namespace=namespace, name=name, **kw)

    start = time.monotonic()
    reason = message = ""
    while True:
        try:
            obj = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                raise fail("disappeared while waiting for Ready (deleted by someone else?)") from None
            obj = None
        elapsed = time.monotonic() - start
        if obj is not None:
            state, reason, message = isvc_state(obj)
            if state == "ready":
                status = obj.get("status") or {}
                url = status.get("url") or (status.get("address") or {}).get("url") or ""
                address_url = (status.get("address") or {}).get("url") or ""
                log(f"{where}: Ready after {elapsed:.0f}s at {url}")
                return {"url": url, "address_url": address_url, "duration_s": round(elapsed, 3)}
            if state == "failed":
                raise fail(f"not Ready: {reason}: {message}".rstrip(": "), reason=reason, message=message)
        if elapsed >= timeout_s:
            last = f" (last: {reason}: {message})".replace(": )", ")") if reason or message else ""
            raise fail(f"not Ready within {timeout_s:.0f}s{last}", reason=reason or "Timeout", message=message)
        time.sleep(min(poll_s, max(0.0, timeout_s - elapsed)))


# --- pointing an existing service at another model (`amopo rollback`) ----------------------------

def get_inferenceservice(namespace: str, name: str, *, api_client=None) -> dict:
    """The stored InferenceService ``namespace``/``name``; ClusterError naming both when there is none."""
    from kubernetes import client
    from kubernetes.client import ApiException

    objects = client.CustomObjectsApi(api_client or load_kube_client())
    try:
        return objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            raise ClusterError(f"{KIND} {namespace}/{name} not found: no InferenceService named '{name}' in "
                               f"namespace '{namespace}' (the deploy step names it after the registered model)",
                               kind=KIND, namespace=namespace, name=name) from None
        raise ClusterError(f"{KIND} {namespace}/{name}: cannot read it ({api_error_text(exc)})",
                           kind=KIND, namespace=namespace, name=name) from None


def storage_uri_patch(obj: dict, storage_uri: str) -> list[dict]:
    """The JSON patch (RFC 6902) that points the InferenceService ``obj``, as :func:`inferenceservice_manifest`
    lays it out, at ``storage_uri``: for the Hugging Face runtime ``spec.predictor.model.storageUri``,
    guarded by a ``test`` that the model format is still ``huggingface``; for the custom runtime the
    value of the ``kserve-container``'s ``STORAGE_URI`` variable, guarded by a ``test`` of that
    variable's name. A canary share left by the last deploy is removed, so the restored model gets
    all the traffic (what deploy does on an update without a canary). ClusterError for a service of
    neither layout."""
    meta = obj.get("metadata") or {}
    where = f"{KIND} {meta.get('namespace')}/{meta.get('name')}"
    predictor = (obj.get("spec") or {}).get("predictor") or {}
    model = predictor.get("model") or {}
    if (model.get("modelFormat") or {}).get("name") == "huggingface":
        patch = [{"op": "test", "path": "/spec/predictor/model/modelFormat/name", "value": "huggingface"},
                 {"op": "replace" if "storageUri" in model else "add", "path": "/spec/predictor/model/storageUri",
                  "value": storage_uri}]
    else:
        found = _storage_uri_vars(predictor)
        if not found:
            raise ClusterError(f"{where}: neither runtime's layout: no spec.predictor.model with modelFormat "
                               f"huggingface and no {CUSTOM_CONTAINER} container with a STORAGE_URI variable; "
                               f"was it deployed by amopo?", kind=KIND, namespace=meta.get("namespace"),
                               name=meta.get("name"))
        i, j, _ = found[0]
        env = f"/spec/predictor/containers/{i}/env/{j}"
        patch = [{"op": "test", "path": f"{env}/name", "value": "STORAGE_URI"},
                 {"op": "replace", "path": f"{env}/value", "value": storage_uri}]
    if predictor.get("canaryTrafficPercent") is not None:
        patch.append({"op": "remove", "path": "/spec/predictor/canaryTrafficPercent"})
    return patch


def served_storage_uri(obj: dict) -> str | None:
    """The storage URI the InferenceService ``obj`` serves now (either runtime), or None."""
    predictor = (obj.get("spec") or {}).get("predictor") or {}
    if (predictor.get("model") or {}).get("storageUri"):
        return predictor["model"]["storageUri"]
    found = _storage_uri_vars(predictor)
    return found[0][2].get("value") if found else None


def _storage_uri_vars(predictor: dict) -> list[tuple[int, int, dict]]:
    """(container index, env index, variable) of each STORAGE_URI variable of the custom runtime's
    container in ``predictor``."""
    return [(i, j, var) for i, container in enumerate(predictor.get("containers") or [])
            if container.get("name") == CUSTOM_CONTAINER
            for j, var in enumerate(container.get("env") or []) if var.get("name") == "STORAGE_URI"]


def json_patch_inferenceservice(namespace: str, name: str, patch: list[dict], *, api_client=None) -> dict:
    """Send ``patch`` as a JSON patch (``application/json-patch+json``; ``CustomObjectsApi`` can only
    send merge patches) and return the patched object. A failed ``test`` changes nothing; the
    ClusterError then carries the API server's message."""
    from kubernetes.client import ApiException

    api_client = api_client or load_kube_client()
    try:
        return api_client.call_api(
            "/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}", "PATCH",
            {"group": GROUP, "version": VERSION, "namespace": namespace, "plural": PLURAL, "name": name}, [],
            {"Accept": "application/json", "Content-Type": "application/json-patch+json"}, body=patch,
            response_type="object", auth_settings=["BearerToken"], _return_http_data_only=True)
    except ApiException as exc:
        raise ClusterError(f"{KIND} {namespace}/{name}: patch failed, nothing changed ({api_error_text(exc)})",
                           kind=KIND, namespace=namespace, name=name) from None
