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
import kubernetes_validate
import pytest
import yaml

from amopo.cluster.trainjob import NCCL_ENV

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
CRDS = ROOT.parent / "shared" / "crds"
K8S_VERSION = "1.33.0"
NAMESPACE = "amopo"
OVERLAYS = ["cpu-dev", "gpu"]
CRD_KINDS = {"InferenceService", "TrainJob"}
POD_OWNERS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}

# What the pipeline's ServiceAccount may do, and nothing more: (apiGroup, resource) -> verbs.
PIPELINE_RULES = {
    ("trainer.kubeflow.org", "trainjobs"): {"get", "list", "watch", "create", "patch", "delete"},
    ("serving.kserve.io", "inferenceservices"): {"get", "list", "watch", "create", "patch", "update", "delete"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "pods/log"): {"get"},
}
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
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{where}: {exc.message}"]
    return []


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_builtin_objects_validate_strictly(overlay):
    objects = [o for o in render(f"overlays/{overlay}") if o["kind"] not in CRD_KINDS]
    assert objects
    errors = [e for o in objects for e in schema_errors(o)]
    assert not errors, "\n".join(errors)


@needs_kubectl
@needs_crds
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_validate_against_their_crds(overlay):
    objects = [o for o in render(f"overlays/{overlay}") if o["kind"] in CRD_KINDS]
    assert objects
    errors = [e for o in objects for e in schema_errors(o)]
    assert not errors, "\n".join(errors)


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
    good = only(render("overlays/gpu"), kind)
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
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in roles[0]["rules"]:
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs")
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
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
    assert {o["kind"] for o, _ in pods} >= {"Deployment", "InferenceService"}
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
        if name != "amopo":  # amopo:latest is the placeholder for the project image (k8s/README.md)
            assert tag and tag != "latest", f"{image}: pin third-party images to a release tag"
    assert ("Deployment", "amopo:latest") in images


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
    config = only(objects, "ConfigMap", "amopo-config")
    assert config["data"]["MLFLOW_TRACKING_URI"] == "http://amopo-mlflow.amopo.svc.cluster.local:5000"


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
def test_cpu_dev_serves_the_project_image_with_real_flags():
    objects = render("overlays/cpu-dev")
    isvc = only(objects, "InferenceService")
    predictor = isvc["spec"]["predictor"]
    (c,) = predictor["containers"]
    assert c["name"] == "kserve-container" and c["image"] == "amopo:latest"
    assert c["command"] == ["amopo"] and c["args"][0] == "serve"
    parses_as_amopo(c["args"])
    args = c["args"]
    assert args[args.index("--model") + 1] == "/mnt/models"
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert int(args[args.index("--port") + 1]) == c["ports"][0]["containerPort"] == 8080
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    assert env["STORAGE_URI"].startswith("s3://")
    assert "nvidia.com/gpu" not in str(c["resources"])
    assert predictor["serviceAccountName"] == "amopo-serving"
    for kind, name in [("StatefulSet", "amopo-postgres"), ("Deployment", "amopo-minio"),
                       ("Service", "amopo-postgres"), ("Service", "amopo-minio"), ("Job", "amopo-minio-bucket")]:
        only(objects, kind, name)


@needs_kubectl
def test_gpu_inferenceservice_uses_the_huggingface_runtime_on_a_gpu():
    isvc = only(render("overlays/gpu"), "InferenceService")
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["modelFormat"]["name"] == "huggingface"
    assert model["storageUri"].startswith("s3://")
    assert int(model["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert predictor["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in predictor["tolerations"])
    assert predictor["serviceAccountName"] == "amopo-serving"


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
