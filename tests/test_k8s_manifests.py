"""The kustomize overlays in k8s/ render, validate against their schemas, and keep their promises.

Each overlay is rendered with ``kubectl kustomize`` (offline; skipped when kubectl is absent).
Built-in kinds are validated with ``kubernetes_validate`` in strict mode (unknown fields fail)
against Kubernetes ``K8S_VERSION``. InferenceService and TrainJob are validated with ``jsonschema``
against the openAPIV3Schema of their CRD in ../shared/crds, made strict the same way: every object
schema without ``additionalProperties`` or ``x-kubernetes-preserve-unknown-fields`` rejects unknown
fields, as the API server's field validation does. CEL rules (``x-kubernetes-validations``) are not
evaluated. Checks that need the CRDs skip when ../shared/crds is absent.
"""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from amopo.cluster.trainjob import NCCL_ENV
from pipelines.dry_run import KUBERNETES_VERSION as K8S_VERSION, core_errors

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
CRDS = ROOT.parent / "shared" / "crds"
NAMESPACE = "amopo"
OVERLAYS = ["cpu-dev", "gpu"]
CRD_KINDS = {"InferenceService", "TrainJob"}
POD_OWNERS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}

# What the pipeline's ServiceAccount may do, and nothing more: (apiGroup, resource, resourceNames) -> verbs.
# The steps manage TrainJobs and InferenceServices; Argo's executor and KFP's driver and launcher,
# which run in every pod of the run under the same account, need the rest.
PIPELINE_RULES = {
    ("trainer.kubeflow.org", "trainjobs", ()): {"get", "list", "watch", "create", "patch", "delete"},
    ("serving.kserve.io", "inferenceservices", ()): {"get", "list", "watch", "create", "patch", "update", "delete"},
    ("", "pods", ()): {"get", "list", "watch"},
    ("", "pods/log", ()): {"get"},
    ("argoproj.io", "workflowtaskresults", ()): {"create", "patch"},
    ("", "configmaps", ("kfp-launcher",)): {"get"},
    ("", "secrets", ("mlpipeline-minio-artifact",)): {"get"},
}
VALUES = sorted((K8S / "values").glob("*.yaml"))
SECRET_LIKE_ENV = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|API_KEY|POSTGRES_USER|ROOT_USER")

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None,
                                   reason="kubectl is not on PATH: cannot render the kustomize overlays")
needs_crds = pytest.mark.skipif(not CRDS.is_dir(),
                                reason=f"{CRDS} is absent: CRD schemas are only beside the project in CI")


@functools.lru_cache(maxsize=None)
def _render(target: str) -> tuple[dict, ...]:
    out = subprocess.run(["kubectl", "kustomize", str(K8S / target)], capture_output=True, text=True)
    assert out.returncode == 0, f"kubectl kustomize k8s/{target} failed:\n{out.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def render(target: str) -> list[dict]:
    """All objects of ``kubectl kustomize k8s/<target>`` (a fresh copy: tests may mutate it)."""
    return copy.deepcopy(list(_render(target)))


def only(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# --- schema validation -----------------------------------------------------------------------

_METADATA_SCHEMA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def _strict(schema: dict) -> dict:
    """``schema`` with unknown fields rejected wherever the API server would drop or reject them."""
    schema = dict(schema)
    if (schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        schema["additionalProperties"] = False
    if "properties" in schema:
        schema["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            schema[key] = _strict(schema[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in schema:
            schema[key] = [_strict(s) for s in schema[key]]
    return schema


@functools.lru_cache(maxsize=None)
def _crd_validators() -> dict[tuple[str, str], jsonschema.Draft7Validator]:
    """(apiVersion, kind) -> a strict validator, for every served version of every CRD file."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRD files are megabytes
    validators = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=loader)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served", True):
                continue
            schema = _strict(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = _METADATA_SCHEMA
            schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
            validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return validators


def schema_errors(obj: dict) -> list[str]:
    """Why ``obj`` does not validate (empty when it does): CRD schema for custom kinds, else Kubernetes'."""
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    if obj.get("kind") in CRD_KINDS:
        validator = _crd_validators().get((obj.get("apiVersion"), obj.get("kind")))
        if validator is None:
            return [f"{where}: no CRD in {CRDS} serves {obj.get('apiVersion')}"]
        return [f"{where}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
                for e in validator.iter_errors(obj)]
    return core_errors(obj)


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_builtin_objects_validate_strictly(overlay):
    objects = [o for o in render(f"overlays/{overlay}") if o["kind"] not in CRD_KINDS]
    assert objects
    errors = [e for o in objects for e in schema_errors(o)]
    assert not errors, "\n".join(errors)


@needs_kubectl
@needs_crds
def test_custom_resources_validate_against_their_crds():
    objects = [o for overlay in OVERLAYS for o in render(f"overlays/{overlay}") if o["kind"] in CRD_KINDS]
    assert [o["kind"] for o in objects] == ["TrainJob"]
    errors = [e for o in objects for e in schema_errors(o)]
    assert not errors, "\n".join(errors)


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_overlay_applies_an_inferenceservice(overlay):
    """The pipeline's deploy step creates the InferenceService (under the registered model's name) from
    a real model; one applied here could only carry a placeholder that never loads, and re-applying the
    overlay would revert the pipeline's deployment."""
    assert not [o for o in render(f"overlays/{overlay}") if o["kind"] == "InferenceService"]


def _inferenceservice() -> dict:
    from amopo.cluster.inferenceservice import inferenceservice_manifest

    return inferenceservice_manifest("amopo", NAMESPACE, "s3://amopo-mlflow/artifacts/1/models/m/artifacts/model",
                                     gpus=1, min_replicas=1, service_account="amopo-serving")


def _set(obj: dict, path: str, value) -> dict:
    *parents, last = path.split(".")
    node = obj
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[last] = value
    return obj


def _rename(obj: dict, path: str, new_key: str) -> dict:
    *parents, last = path.split(".")
    node = obj
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[new_key] = node.pop(last)
    return obj


@needs_kubectl
@needs_crds
@pytest.mark.parametrize("kind, break_it, expected", [
    ("InferenceService", lambda o: _rename(o, "spec.predictor.model.storageUri", "storageUrl"),
     "'storageUrl' was unexpected"),
    ("InferenceService", lambda o: _set(o, "spec.predictor.minReplicas", "one"), "not of type 'integer'"),
    ("InferenceService", lambda o: _set(o, "spec.predictor.model.modelFormat", {"version": "1"}),
     "'name' is a required property"),
    ("InferenceService", lambda o: _set(o, "metadata.labelz", {"a": "b"}), "'labelz' was unexpected"),
    ("TrainJob", lambda o: _set(o, "spec.trainer.numNodes", "two"), "not of type 'integer'"),
    ("TrainJob", lambda o: _rename(o, "spec.runtimeRef", "runtime"), "'runtimeRef' is a required property"),
    ("TrainJob", lambda o: _set(o, "spec.runtimePatches.0.trainingRuntimeSpec.template.spec.replicatedJobs.0"
                                   ".template.spec.template.spec.hostNetwork", True), "'hostNetwork' was unexpected"),
], ids=["isvc-misspelled", "isvc-wrong-type", "isvc-missing-required", "isvc-bad-metadata",
        "trainjob-wrong-type", "trainjob-missing-required", "trainjob-unpatchable-field"])
def test_validator_rejects_broken_custom_resources(kind, break_it, expected):
    good = _inferenceservice() if kind == "InferenceService" else only(render("overlays/gpu"), kind)
    assert schema_errors(good) == []
    errors = schema_errors(break_it(good))
    assert any(expected in e for e in errors), f"a broken {kind} passed validation or failed otherwise: {errors}"


@needs_kubectl
@pytest.mark.parametrize("break_it, expected", [
    (lambda o: _rename(o, "spec.template.spec.automountServiceAccountToken", "automountServiceAcountToken"),
     "'automountServiceAcountToken' was unexpected"),
    (lambda o: _set(o, "spec.replicas", "1"), "not of type 'integer'"),
    (lambda o: _set(o, "spec.template.spec.containers.0.ports.0.containerPort", "http"), "not of type 'integer'"),
], ids=["misspelled", "wrong-type", "wrong-nested-type"])
def test_validator_rejects_broken_builtin_objects(break_it, expected):
    good = only(render("overlays/gpu"), "Deployment", "amopo-mlflow")
    assert schema_errors(good) == []
    errors = schema_errors(break_it(good))
    assert any(expected in e for e in errors), f"a broken Deployment passed validation or failed otherwise: {errors}"


# --- properties of the rendered objects ------------------------------------------------------

def pod_specs(obj: dict) -> list[dict]:
    """The pod-level specs an object creates pods from (empty for objects that create none)."""
    kind, spec = obj["kind"], obj.get("spec", {})
    if kind in POD_OWNERS:
        return [spec["template"]["spec"]]
    if kind == "InferenceService":
        return [spec[c] for c in ("predictor", "transformer", "explainer") if c in spec]
    if kind == "TrainJob":
        return [job["template"]["spec"]["template"]["spec"]
                for patch in spec.get("runtimePatches", [])
                for job in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]]
    return []


def containers(pod: dict) -> list[dict]:
    """Containers of a pod spec; an InferenceService's ``model`` counts as its container."""
    found = list(pod.get("initContainers", [])) + list(pod.get("containers", []))
    if "model" in pod:
        found.append({"name": "model", **pod["model"]})
    return found


def all_env(objects: list[dict]) -> list[tuple[str, dict]]:
    """(object/container, env entry) for every env entry of every container and of TrainJob trainers."""
    found = []
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        for pod in pod_specs(obj):
            for c in containers(pod):
                found += [(f"{where}/{c['name']}", e) for e in c.get("env", [])]
        if obj["kind"] == "TrainJob":
            found += [(f"{where}/trainer", e) for e in obj["spec"]["trainer"].get("env", [])]
    return found


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_lives_in_the_amopo_namespace(overlay):
    for obj in render(f"overlays/{overlay}"):
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == NAMESPACE
        else:
            assert obj["metadata"].get("namespace") == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']}"


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pipeline_role_grants_exactly_what_the_pipeline_needs(overlay):
    objects = render(f"overlays/{overlay}")
    roles = [o for o in objects if o["kind"] in ("Role", "ClusterRole")]
    assert [r["kind"] for r in roles] == ["Role"], "only one namespaced Role is expected"
    granted: dict[tuple[str, str, tuple], set[str]] = {}
    for rule in roles[0]["rules"]:
        assert not rule.get("nonResourceURLs")
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                key = (group, resource, tuple(rule.get("resourceNames", ())))
                granted.setdefault(key, set()).update(rule["verbs"])
    assert granted == PIPELINE_RULES
    binding = only(objects, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": roles[0]["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "amopo-pipeline", "namespace": NAMESPACE}]
    only(objects, "ServiceAccount", "amopo-pipeline")


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_container_runs_as_root(overlay):
    pods = [(o, p) for o in render(f"overlays/{overlay}") for p in pod_specs(o)]
    assert {o["kind"] for o, _ in pods} >= {"Deployment"}
    for obj, pod in pods:
        pod_ctx = pod.get("securityContext", {})
        for c in containers(pod):
            where = f"{obj['kind']}/{obj['metadata']['name']}/{c['name']}"
            ctx = {**pod_ctx, **c.get("securityContext", {})}
            assert ctx.get("runAsNonRoot") is True, f"{where}: runAsNonRoot is not true"
            assert ctx.get("runAsUser", 1) != 0, f"{where}: runs as uid 0"
            assert c.get("securityContext", {}).get("privileged") is not True, where
            assert c.get("securityContext", {}).get("allowPrivilegeEscalation", False) is False, where


@needs_kubectl
@pytest.mark.parametrize("target", ["base", "overlays/gpu"])
def test_secrets_are_only_referenced_never_written(target):
    objects = render(target)
    assert not [o for o in objects if o["kind"] == "Secret"], f"k8s/{target} must not carry Secret objects"
    env = all_env(objects)
    assert env
    for where, entry in env:
        if SECRET_LIKE_ENV.search(entry["name"]):
            assert "value" not in entry and "secretKeyRef" in entry.get("valueFrom", {}), \
                f"{where}: {entry['name']} must come from a Secret (secretKeyRef)"
        value = entry.get("value", "")
        # credentials in a URI are allowed only as $(VAR) references to secret-backed variables
        for user_pass in re.findall(r"://([^/@]*)@", value):
            assert re.fullmatch(r"(\$\([A-Z_]+\))(:\$\([A-Z_]+\))?", user_pass), f"{where}: literal credentials"


@needs_kubectl
def test_dev_credentials_exist_only_in_cpu_dev_and_say_so():
    secrets = [o for o in render("overlays/cpu-dev") if o["kind"] == "Secret"]
    assert {s["metadata"]["name"] for s in secrets} == {"amopo-mlflow-db", "amopo-s3"}
    for secret in secrets:
        assert secret["metadata"]["labels"].get("amopo.dev/dev-only-credentials") == "true"
    s3 = only(secrets, "Secret", "amopo-s3")
    assert s3["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"].startswith("amopo-minio.")


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_an_image_and_third_party_images_are_pinned(overlay):
    images = []
    for obj in render(f"overlays/{overlay}"):
        if obj["kind"] == "TrainJob":  # its runtime patches name containers, the image is the trainer's
            images.append(("TrainJob", obj["spec"]["trainer"].get("image")))
        else:
            images += [(obj["kind"], c.get("image")) for p in pod_specs(obj) for c in containers(p)]
    for kind, image in images:
        if kind == "InferenceService" and image is None:
            continue  # a `model:` block runs the ServingRuntime's image
        assert image, f"a {kind} container has no image"
        name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
        if name != "amopo":  # amopo:TAG is the project image (k8s/README.md)
            assert tag and tag != "latest", f"{image}: pin third-party images to a release tag"
    assert ("Deployment", "amopo:0.1.0" if overlay == "cpu-dev" else "amopo:latest") in images


def pod_labels(objects: list[dict], deployment: str) -> dict:
    return only(objects, "Deployment", deployment)["spec"]["template"]["metadata"]["labels"]


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_server_uses_postgres_s3_and_probes_health(overlay):
    objects = render(f"overlays/{overlay}")
    pod = only(objects, "Deployment", "amopo-mlflow")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    line = " ".join(c["command"] + c["args"])
    env = {e["name"]: e for e in c["env"]}
    assert line.startswith("mlflow server ") and "--host=0.0.0.0" in line and "--port=5000" in line
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in line
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"].startswith("postgresql://$(POSTGRES_USER):$(POSTGRES_PASSWORD)@")
    # artifacts go straight to S3 so that registered models have s3:// URIs KServe can fetch
    assert re.search(r"--default-artifact-root=s3://\S+", line) and "--no-serve-artifacts" in line
    for name in ("POSTGRES_USER", "POSTGRES_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "MLFLOW_S3_ENDPOINT_URL"):
        assert "secretKeyRef" in env[name]["valueFrom"], name
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"
    # in-cluster clients reach the server by its Service name, which MLflow must accept as Host
    assert "amopo-mlflow.amopo.svc*" in line
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health"
    assert c["resources"]["requests"] and c["resources"]["limits"]
    service = only(objects, "Service", "amopo-mlflow")
    assert [p["port"] for p in service["spec"]["ports"]] == [5000]
    assert service["spec"]["selector"].items() <= pod_labels(objects, "amopo-mlflow").items()
    # every values file points runs at this Service, by a name the server accepts as Host
    address = f"http://{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local:{service['spec']['ports'][0]['port']}"
    assert VALUES
    for path in VALUES:
        assert yaml.safe_load(path.read_text())["parameters"]["mlflow_tracking_uri"] == address, path
    assert not [o for o in objects if o["kind"] == "ConfigMap"], "runs take their settings from k8s/values/"


@needs_kubectl
def test_workspace_is_shared_read_write_many_outside_dev():
    for target in ("base", "overlays/gpu"):
        pvc = only(render(target), "PersistentVolumeClaim", "amopo-workspace")
        assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], target


@functools.lru_cache(maxsize=None)
def _amopo_parser():
    from amopo.cli import build_parser

    return build_parser()


def parses_as_amopo(args: list[str]) -> None:
    """Fail unless ``args`` (after ``amopo``) is a valid command line of the real CLI."""
    try:
        _amopo_parser().parse_args(args)
    except SystemExit as exc:
        pytest.fail(f"`amopo {' '.join(args)}` is not a valid command line (exit {exc.code})")


@needs_kubectl
def test_cpu_dev_runs_the_loaded_project_image_without_pulling_it():
    """On kind/minikube/k3d the image is loaded, not pushed, so nothing may pull it: the stack runs it
    with IfNotPresent, and runs with k8s/values/cpu-dev.yaml use the same loaded tag, not `latest`
    (which Kubernetes would pull Always)."""
    objects = render("overlays/cpu-dev")
    project = [(o, c) for o in objects for p in pod_specs(o) for c in containers(p)
               if c.get("image", "").rpartition(":")[0] == "amopo"]
    assert project, "the dev stack runs the project image somewhere"
    for obj, c in project:
        assert c.get("imagePullPolicy") in ("IfNotPresent", "Never"), f"{obj['kind']}/{obj['metadata']['name']}"
    run_image = yaml.safe_load((K8S / "values" / "cpu-dev.yaml").read_text())["parameters"]["image"]
    assert {c["image"] for _, c in project} == {run_image} and not run_image.endswith(":latest")
    for kind, name in [("StatefulSet", "amopo-postgres"), ("Deployment", "amopo-minio"),
                       ("Service", "amopo-postgres"), ("Service", "amopo-minio"), ("Job", "amopo-minio-bucket")]:
        only(objects, kind, name)


@needs_kubectl
def test_gpu_trainjob_runs_amopo_train_under_torchrun_on_two_gpu_nodes():
    objects = render("overlays/gpu")
    job = only(objects, "TrainJob")
    spec, trainer = job["spec"], job["spec"]["trainer"]
    assert spec["runtimeRef"]["name"] == "torch-distributed"
    assert spec["runtimeRef"].get("kind", "ClusterTrainingRuntime") == "ClusterTrainingRuntime"
    assert trainer["numNodes"] == 2
    assert int(trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"]) == trainer["numProcPerNode"]
    command = trainer["command"]
    assert command[:3] == ["torchrun", "--module", "amopo"]
    # rendezvous comes from the runtime's PET_* variables, not from hard-coded torchrun flags
    assert not [a for a in command if a.startswith(("--nnodes", "--node_rank", "--master_addr", "--rdzv"))]
    parses_as_amopo(command[3:])
    assert command[3] == "train"
    (pod,) = pod_specs(job)
    assert (spec["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["name"]
            == "node")
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
              if "persistentVolumeClaim" in v}
    (node,) = pod["containers"]
    assert node["name"] == "node"
    mounts = {m["mountPath"]: m["name"] for m in node["volumeMounts"]}
    assert claims[mounts["/workspace"]] == "amopo-workspace"
    only(objects, "PersistentVolumeClaim", "amopo-workspace")
    data = [a.split("=", 1)[1] for a in command if a.startswith(("--data=", "--output="))]
    assert data and all(p.startswith("/workspace/") for p in data)
    env = {e["name"]: e.get("value") for e in trainer["env"]}
    assert {k: env.get(k) for k in NCCL_ENV} == NCCL_ENV, "the example sets the pipeline's NCCL defaults"


# --- Kueue queues (k8s/kueue) ----------------------------------------------------------------

# Kueue's v1beta1 API (kueue.x-k8s.io), as its CRDs in kubernetes-sigs/kueue
# (config/components/crd/bases) declare the fields k8s/kueue uses; no Kueue CRD is beside the
# project, so these strict subsets stand in for them: any other field fails.
_KUEUE_NAME = {"type": "string", "maxLength": 253,
               "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"}
_KUEUE_QUANTITY = {"anyOf": [{"type": "integer", "minimum": 0},
                             {"type": "string", "pattern": r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE])?$"}]}
_STOP_POLICY = {"enum": ["None", "Hold", "HoldAndDrain"]}
KUEUE_SPECS = {
    "ResourceFlavor": {"type": "object", "additionalProperties": False, "properties": {
        "nodeLabels": {"type": "object", "maxProperties": 8, "additionalProperties": {"type": "string"}},
        "nodeTaints": {"type": "array", "maxItems": 8}, "tolerations": {"type": "array", "maxItems": 8},
        "topologyName": {"type": "string"}}},
    "ClusterQueue": {"type": "object", "additionalProperties": False, "properties": {
        "cohort": _KUEUE_NAME, "stopPolicy": _STOP_POLICY,
        "queueingStrategy": {"enum": ["StrictFIFO", "BestEffortFIFO"]},
        "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
            "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "matchExpressions": {"type": "array"}}},
        "resourceGroups": {"type": "array", "maxItems": 16, "items": {
            "type": "object", "additionalProperties": False, "required": ["coveredResources", "flavors"],
            "properties": {
                "coveredResources": {"type": "array", "minItems": 1, "maxItems": 64, "items": {"type": "string"}},
                "flavors": {"type": "array", "minItems": 1, "maxItems": 64, "items": {
                    "type": "object", "additionalProperties": False, "required": ["name", "resources"],
                    "properties": {"name": _KUEUE_NAME, "resources": {
                        "type": "array", "minItems": 1, "maxItems": 64, "items": {
                            "type": "object", "additionalProperties": False, "required": ["name", "nominalQuota"],
                            "properties": {"name": {"type": "string"}, "nominalQuota": _KUEUE_QUANTITY,
                                           "borrowingLimit": _KUEUE_QUANTITY,
                                           "lendingLimit": _KUEUE_QUANTITY}}}}}}}}}}},
    "LocalQueue": {"type": "object", "additionalProperties": False, "required": ["clusterQueue"],
                   "properties": {"clusterQueue": _KUEUE_NAME, "stopPolicy": _STOP_POLICY}},
}
CLUSTER_SCOPED_KUEUE = {"ResourceFlavor", "ClusterQueue"}


def kueue_errors(obj: dict) -> list[str]:
    """Why ``obj`` is not a valid Kueue v1beta1 object of k8s/kueue's kinds (empty when it is)."""
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    if obj.get("apiVersion") != "kueue.x-k8s.io/v1beta1" or obj.get("kind") not in KUEUE_SPECS:
        return [f"{where}: not a kueue.x-k8s.io/v1beta1 {'/'.join(KUEUE_SPECS)}"]
    schema = {"type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata"],
              "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                             "metadata": _METADATA_SCHEMA, "spec": KUEUE_SPECS[obj["kind"]]}}
    errors = [f"{where}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(obj)]
    # The CRD's CEL rule: each flavor lists every covered resource, in the same order.
    for group in obj.get("spec", {}).get("resourceGroups", []):
        for flavor in group.get("flavors", []):
            if [r.get("name") for r in flavor.get("resources", [])] != group.get("coveredResources"):
                errors.append(f"{where}: flavor {flavor.get('name')} must list the covered resources in order")
    return errors


@needs_kubectl
def test_kueue_queues_validate_and_refer_to_each_other():
    objects = render("kueue")
    assert sorted(o["kind"] for o in objects) == ["ClusterQueue", "LocalQueue", "ResourceFlavor"]
    errors = [e for o in objects for e in kueue_errors(o)]
    assert not errors, "\n".join(errors)
    for obj in objects:  # cluster-scoped kinds carry no namespace; the LocalQueue lives beside the runs
        assert obj["metadata"].get("namespace") == (None if obj["kind"] in CLUSTER_SCOPED_KUEUE else NAMESPACE)
    queue, cluster_queue = only(objects, "LocalQueue"), only(objects, "ClusterQueue")
    assert queue["spec"]["clusterQueue"] == cluster_queue["metadata"]["name"]
    flavors = {f["name"] for g in cluster_queue["spec"]["resourceGroups"] for f in g["flavors"]}
    assert flavors == {o["metadata"]["name"] for o in objects if o["kind"] == "ResourceFlavor"}
    assert cluster_queue["spec"]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": NAMESPACE}


@pytest.mark.parametrize("break_it, expected", [
    (lambda o: _rename(o, "spec.clusterQueue", "clusterQeueu"), "'clusterQeueu' was unexpected"),
    (lambda o: _set(o, "spec.stopPolicy", "Pause"), "is not one of"),
    (lambda o: _set(o, "apiVersion", "kueue.x-k8s.io/v1alpha1"), "not a kueue.x-k8s.io/v1beta1"),
], ids=["misspelled", "bad-enum", "wrong-version"])
def test_the_kueue_check_rejects_broken_queues(break_it, expected):
    queue = yaml.safe_load((K8S / "kueue" / "local-queue.yaml").read_text())
    assert kueue_errors(queue) == []
    assert any(expected in e for e in kueue_errors(break_it(queue))), kueue_errors(queue)


def test_the_kueue_check_rejects_a_flavor_that_skips_a_covered_resource():
    cluster_queue = yaml.safe_load((K8S / "kueue" / "cluster-queue.yaml").read_text())
    cluster_queue["spec"]["resourceGroups"][0]["flavors"][0]["resources"].pop()
    assert any("must list the covered resources in order" in e for e in kueue_errors(cluster_queue))


@needs_kubectl
def test_the_gpu_values_queue_fits_what_their_run_creates(tmp_path):
    """The LocalQueue is the one cluster-gpu.yaml names, and its ClusterQueue covers every resource
    that run's TrainJob and InferenceService request (Kueue admits nothing that asks for an uncovered one)."""
    from pipelines.dry_run import dry_run
    from pipelines.params import pipeline_parameters
    from pipelines.values import load_values

    values = load_values(K8S / "values" / "cluster-gpu.yaml")
    objects = render("kueue")
    assert values.parameters["queue_name"] == only(objects, "LocalQueue")["metadata"]["name"]
    assert values.parameters["namespace"] == only(objects, "LocalQueue")["metadata"]["namespace"]
    plan = {"params": values.parameters, "resolved": {**pipeline_parameters(), **values.parameters},
            "namespace": values.parameters["namespace"], "service_account": values.run["service_account"]}
    dry_run(plan, output_dir=tmp_path / "out")
    covered = {r for g in only(objects, "ClusterQueue")["spec"]["resourceGroups"] for r in g["coveredResources"]}
    job = yaml.safe_load((tmp_path / "out" / "trainjob.yaml").read_text())
    isvc = yaml.safe_load((tmp_path / "out" / "inferenceservice.yaml").read_text())
    requested = {*job["spec"]["trainer"]["resourcesPerNode"]["requests"],
                 *job["spec"]["trainer"]["resourcesPerNode"]["limits"],
                 *isvc["spec"]["predictor"]["model"]["resources"]["requests"],
                 *isvc["spec"]["predictor"]["model"]["resources"]["limits"]}
    assert requested == {"cpu", "memory", "nvidia.com/gpu"} and requested <= covered
    for obj in (job, isvc):
        assert obj["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == values.parameters["queue_name"]
