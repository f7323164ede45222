"""Every command of the cluster guide, docs/cluster.md, executed in the guide's order.

The commands are read from the guide's ```bash blocks (a line ending in a backslash, an open quote and
a here-document continue a command); :data:`STEPS` names, in the same order, each command's first
line and how it runs here. A command added to the guide without an entry fails
``test_every_command_of_the_guide_has_a_way_to_run``; the entries run in
``test_the_guide_runs_from_image_to_rollback``, each as the guide writes it, in one bash per command
with the variables the earlier ones set (after the substitutions below), followed by checks of what
it did.

How the commands run (no cluster, container engine service or registry is reachable here):

| mode | commands | how |
|---|---|---|
| shell | ``export ...``, ``mkdir``, ``cat > ... <<EOF`` | bash, for real |
| build | ``bash scripts/build_image.sh --torch cu128 --tag "$IMAGE"`` | for real, with buildah and ``--torch cpu`` (see below): it reuses the cached layers of the session's ``image`` fixture, and its result must have that image's Dockerfile steps and configuration |
| push | ``buildah push "$IMAGE"`` | for real, to a registry on 127.0.0.1 (Debian's ``docker-registry``); a registries.conf given through ``CONTAINERS_REGISTRIES_CONF`` marks it plain HTTP. The registry's manifest must name the local image's config and layers |
| kubectl | every ``kubectl`` command but the port-forward | for real, against an emulated API server (kmock; tests/helpers/kubectl_api.py says what it adds for kubectl) through a generated kubeconfig. kmock does not validate objects, so the stored built-in ones are validated here (``kubernetes-validate``, strict). The test plays the controllers: MLflow's Deployment becomes Available when its command answers in the image; the run's TrainJob and InferenceService are created by the train and deploy code paths, and the InferenceService becomes Ready when the stand-in Hugging Face runtime serving it answers |
| dry-run | ``amopo pipeline submit --dry-run ...`` | for real (it contacts nothing) |
| submit | ``amopo pipeline submit --host ...`` | for real, against the stand-in KFP API server of tests/helpers/kfp_api.py |
| endpoint | the ``curl`` calls of section 6 | for real, against tests/helpers/hf_runtime.py, a stand-in for KServe's Hugging Face runtime (its docstring says why and what it does as the runtime does: the model folder's chat template rendered with the request's ``chat_template_kwargs``, a template error a 400), run on the host on a free port for the dry run's InferenceService (``modelFormat: huggingface``), serving under its name a tiny model with the conditioning spec of the values file's dimensions and the steering chat template training writes |
| mlflow | the ``curl`` call of section 7 | for real, against the MLflow Deployment's command (as applied to the emulated API, its Secret-backed variables resolved from the stored Secrets) running in the image, with a sqlite store instead of PostgreSQL |
| rollback | ``amopo rollback`` of section 7 | for real, against that MLflow and the emulated API; the test plays KServe (the new revision not Ready for a moment, then Ready for the patched generation) |
| not run | ``kubectl port-forward svc/amopo-mlflow 5000:5000 &`` | kmock cannot stream a port-forward. The test checks that the Service exists in the emulated API with port 5000 in front of the Deployment, and the address the forward would open is where the Deployment's command runs (substitution below) |

Substitutions, applied to the command text before it runs:

| in the guide | here | why |
|---|---|---|
| ``registry.example.com/ml`` | ``127.0.0.1:<port>/ml`` | the local registry |
| ``--torch cu128`` | ``--torch cpu`` | no CUDA wheel is reachable here; the Dockerfile and everything else are the same (the cu128 plan is checked on its own) |
| ``https://kubeflow.example.com/pipeline`` | ``http://127.0.0.1:<port>/pipeline`` | the stand-in KFP API server |
| ``localhost:5000`` | ``127.0.0.1:<port>`` | where the port-forward's local end would be: the MLflow command in the image |
| ``amopo-train-1a2b3c4d`` | the run's TrainJob | the guide's example name; the test stores a progress post in its ``status.trainerStatus`` first, as the Trainer does |

Variables the guide asks the reader to set are set to test values: ``POSTGRES_PASSWORD``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``JUDGE_API_KEY``, ``KFP_TOKEN``; ``KUBECONFIG``
points at the emulated API server and ``PATH`` starts with this environment's ``bin`` (``amopo``).
The commands run in a scratch folder whose entries link to the repository's, so ``out/`` and
``my-cluster/`` are written there; build/image.json, which the guide's build rewrites, is restored.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml

from helpers.image import ImageRunner, image_tools_missing

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "cluster.md"
VALUES = ROOT / "k8s" / "values" / "cluster-gpu.yaml"
K8S_VERSION = "1.33.0"
NS = "amopo"
CUSTOM_RESOURCES = {
    "trainer.kubeflow.org/v1alpha1/trainjobs": {"kind": "TrainJob", "namespaced": True},
    "trainer.kubeflow.org/v1alpha1/clustertrainingruntimes": {"kind": "ClusterTrainingRuntime", "namespaced": False},
    "serving.kserve.io/v1beta1/inferenceservices": {"kind": "InferenceService", "namespaced": True,
                                                    "shortnames": {"isvc"}},
    "kueue.x-k8s.io/v1beta1/resourceflavors": {"kind": "ResourceFlavor", "namespaced": False},
    "kueue.x-k8s.io/v1beta1/clusterqueues": {"kind": "ClusterQueue", "namespaced": False},
    "kueue.x-k8s.io/v1beta1/localqueues": {"kind": "LocalQueue", "namespaced": True},
}
ISVC_PATH = f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices/amopo"
SECRETS = {"POSTGRES_PASSWORD": "pg-pass-123", "AWS_ACCESS_KEY_ID": "AKIA-TEST", "AWS_SECRET_ACCESS_KEY": "s3-secret",
           "JUDGE_API_KEY": "judge-key", "KFP_TOKEN": "kfp-token-42"}


# --- the guide's commands ----------------------------------------------------------------------

def _closed(text: str) -> bool:
    """Whether ``text`` is a whole command: no trailing backslash, no open quote."""
    if text.endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:   # "No closing quotation"
        return False
    return True


def guide_commands(text: str) -> list[str]:
    """The commands of the ```bash blocks of ``text``, in order; comment lines between commands dropped."""
    commands: list[str] = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S):
        lines, buf = iter(block.splitlines()), []
        for line in lines:
            if not buf and (not line.strip() or line.lstrip().startswith("#")):
                continue
            buf.append(line)
            heredoc = re.search(r"<<-?\s*'?([A-Za-z_]+)'?", line)
            if heredoc:
                for body in lines:
                    buf.append(body)
                    if body.strip() == heredoc[1]:
                        break
            elif not _closed("\n".join(buf)):
                continue
            commands.append("\n".join(buf))
            buf = []
        assert not buf, f"unfinished command at the end of a block of {GUIDE.name}: {buf}"
    return commands


# --- what runs around the commands ---------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, body=None, *, method: str | None = None, headers: dict | None = None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"),
                                 headers={"content-type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=timeout) as response:
        return json.loads(response.read() or b"{}")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except OSError:
        return False


def wait_until(predicate, what: str, timeout_s: float, proc: subprocess.Popen | None = None,
               log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited ({proc.returncode}):\n"
                                 f"{log.read_text()[-3000:] if log else ''}")
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s\n{log.read_text()[-3000:] if log else ''}")


def k8s_expand(text: str, env: dict[str, str]) -> str:
    """``$(VAR)`` expanded as the kubelet does (unknown references are left as written)."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), text)


def decoded(secret: dict) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


@dataclass
class Guide:
    """The state the guide's commands run in, and what the test set up around them."""

    cwd: Path
    env: dict[str, str]
    subs: dict[str, str]
    api: object                      # helpers.kubectl_api.KubeAPI
    registry: str                    # 127.0.0.1:PORT
    kfp_url: str
    kfp_recorded: list
    runner_for: Callable[[str], ImageRunner]
    workspace: Path
    model_dir: Path
    fixture_image: str
    logs: Path
    procs: list = field(default_factory=list)
    threads: list = field(default_factory=list)
    mlflow_port: int = 0
    serve_port: int = 0
    results: dict = field(default_factory=dict)

    @property
    def image(self) -> str:
        return self.env["IMAGE"]

    @property
    def mlflow(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def stored(self, plural: str, namespace: str | None, name: str) -> dict:
        obj = self.api.stored(plural, namespace, name)
        assert obj is not None, f"{plural} {namespace}/{name} is not in the emulated API"
        return obj

    def background(self, fn) -> None:
        errors: list = []

        def run():
            try:
                fn()
            except BaseException as exc:   # noqa: BLE001 (reported by check_threads)
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append((thread, errors))

    def check_threads(self) -> None:
        for thread, errors in self.threads:
            if errors:
                raise errors[0]


def run_command(command: str, g: Guide, timeout_s: float) -> subprocess.CompletedProcess:
    """``command`` in bash with the variables of the earlier commands; the variables it sets are kept."""
    env_file = g.cwd / ".guide-env"
    script = f"set -a -o pipefail\ntrap 'env -0 > {shlex.quote(str(env_file))}' EXIT\n{command}\n"
    result = subprocess.run(["bash", "-c", script], env=g.env, cwd=g.cwd, capture_output=True, text=True,
                            timeout=timeout_s)
    if env_file.is_file():
        g.env = dict(item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
        env_file.unlink()
    return result


# --- what each command must have done ------------------------------------------------------------

def after_export_image(g: Guide, out: str) -> None:
    assert g.env["REGISTRY"] == f"{g.registry}/ml"
    assert g.env["IMAGE"] == f"{g.registry}/ml/amopo:0.1.0-cu128"


def after_build(g: Guide, out: str) -> None:
    from amopo.image.build import make_plan

    inspect = json.loads(subprocess.run(["buildah", "inspect", "--type", "image", g.image], capture_output=True,
                                        text=True, check=True).stdout)
    fixture = json.loads(subprocess.run(["buildah", "inspect", "--type", "image", g.fixture_image],
                                        capture_output=True, text=True, check=True).stdout)
    # the image every other test runs: the same Dockerfile steps, build arguments and configuration (its
    # id differs whenever a project file changed between the two builds)
    steps = [[re.sub(r"\b(dir|file|multi):[0-9a-f]{64}", r"\1:<content>", h.get("created_by", ""))
              for h in i["OCIv1"]["history"]] for i in (inspect, fixture)]
    assert steps[0] == steps[1], out[-2000:]
    assert inspect["OCIv1"]["config"] == fixture["OCIv1"]["config"]
    assert f"built {g.image} with buildah" in out
    # what the substituted --torch cu128 selects: PyTorch's CUDA 12.8 index and wheel
    plan = make_plan("buildah", tag=g.image, base_image="base", torch="cu128", host_pip={}, pip_dir=None)
    assert plan.build_args["TORCH_INDEX_URL"].endswith("/whl/cu128")
    assert plan.build_args["TORCH_REQUIREMENT"].endswith("+cu128")


def after_push(g: Guide, out: str) -> None:
    repo, tag = g.image.split("/", 1)[1].rsplit(":", 1)
    accept = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                        "application/vnd.docker.distribution.manifest.v2+json"])
    manifest = http_json(f"http://{g.registry}/v2/{repo}/manifests/{tag}", headers={"accept": accept})
    local = json.loads(subprocess.run(["buildah", "inspect", "--type", "image", g.image], capture_output=True,
                                      text=True, check=True).stdout)
    assert manifest["config"]["digest"] == "sha256:" + local["FromImageID"]
    assert len(manifest["layers"]) == len(json.loads(local["Manifest"])["layers"]) >= 2
    for layer in manifest["layers"]:
        req = urllib.request.Request(f"http://{g.registry}/v2/{repo}/blobs/{layer['digest']}", method="HEAD")
        with urllib.request.urlopen(req, timeout=30) as response:
            assert response.status == 200


def after_namespace(g: Guide, out: str) -> None:
    assert g.stored("namespaces", None, NS)["metadata"]["labels"]["pod-security.kubernetes.io/warn"] == "restricted"


def after_db_secret(g: Guide, out: str) -> None:
    assert decoded(g.stored("secrets", NS, "amopo-mlflow-db")) == {
        "POSTGRES_USER": "mlflow", "POSTGRES_PASSWORD": SECRETS["POSTGRES_PASSWORD"],
        "POSTGRES_HOST": "db.example.internal", "POSTGRES_DB": "mlflow"}


def after_s3_secret(g: Guide, out: str) -> None:
    assert decoded(g.stored("secrets", NS, "amopo-s3")) == {
        "AWS_ACCESS_KEY_ID": SECRETS["AWS_ACCESS_KEY_ID"], "AWS_SECRET_ACCESS_KEY": SECRETS["AWS_SECRET_ACCESS_KEY"],
        "MLFLOW_S3_ENDPOINT_URL": "https://s3.example.com"}


def after_annotate(g: Guide, out: str) -> None:
    annotations = g.stored("secrets", NS, "amopo-s3")["metadata"]["annotations"]
    assert {k: v for k, v in annotations.items() if k.startswith("serving.kserve.io/")} == {
        "serving.kserve.io/s3-endpoint": "s3.example.com", "serving.kserve.io/s3-usehttps": "1",
        "serving.kserve.io/s3-region": "us-east-1"}
    assert decoded(g.stored("secrets", NS, "amopo-s3"))["AWS_ACCESS_KEY_ID"] == SECRETS["AWS_ACCESS_KEY_ID"]


def after_judge_secret(g: Guide, out: str) -> None:
    assert decoded(g.stored("secrets", NS, "amopo-judge")) == {"api-key": SECRETS["JUDGE_API_KEY"]}


def after_overlay_file(g: Guide, out: str) -> None:
    doc = yaml.safe_load((g.cwd / "my-cluster" / "kustomization.yaml").read_text())
    assert doc["images"] == [{"name": "amopo", "newName": f"{g.registry}/ml/amopo", "newTag": "0.1.0-cu128"}]


def after_apply_overlay(g: Guide, out: str) -> None:
    import kubernetes_validate

    deployment = g.stored("deployments", NS, "amopo-mlflow")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == g.image
    assert g.stored("trainjobs", NS, "amopo-train")["spec"]["trainer"]["image"] == g.image
    for name in ("amopo-pipeline", "amopo-serving"):
        g.stored("serviceaccounts", NS, name)
    rendered = subprocess.run(["kubectl", "kustomize", "my-cluster"], cwd=g.cwd, capture_output=True, text=True,
                              check=True).stdout
    plurals = {"Namespace": "namespaces", "ServiceAccount": "serviceaccounts", "Role": "roles",
               "RoleBinding": "rolebindings", "Service": "services", "PersistentVolumeClaim": "persistentvolumeclaims",
               "Deployment": "deployments"}
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert {d["kind"] for d in docs} == {*plurals, "TrainJob"}
    for doc in docs:   # what kubectl left to the server to validate (fieldValidation=Strict), as it was stored
        if doc["kind"] in plurals:
            ns = None if doc["kind"] == "Namespace" else NS
            obj = g.stored(plurals[doc["kind"]], ns, doc["metadata"]["name"])
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    start_mlflow(g, deployment)


def start_mlflow(g: Guide, deployment: dict) -> None:
    """The MLflow Deployment as applied, run in the image: its variables resolved from the stored
    Secrets as the kubelet does, the store a sqlite file (no PostgreSQL here), a free port. Its
    Deployment is marked Available once /health answers, as the Deployment controller would."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for item in container["env"]:
        if "valueFrom" in item:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = decoded(g.stored("secrets", NS, ref["name"]))[ref["key"]]
        else:
            env[item["name"]] = k8s_expand(item["value"], env)
    assert env["MLFLOW_BACKEND_STORE_URI"] == (f"postgresql://mlflow:{SECRETS['POSTGRES_PASSWORD']}"
                                               "@db.example.internal:5432/mlflow")
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "https://s3.example.com"
    env["MLFLOW_BACKEND_STORE_URI"] = "sqlite:////workspace/mlflow.db"
    args = [k8s_expand(a, env) for a in container["args"]]
    g.mlflow_port = free_port()
    args[args.index("--port=5000")] = f"--port={g.mlflow_port}"
    g.subs["localhost:5000"] = f"127.0.0.1:{g.mlflow_port}"
    log = g.logs / "mlflow.log"
    proc = g.runner_for(container["image"]).start([*container["command"], *args], log, env=env)
    g.procs.append(proc)
    probe = container["readinessProbe"]["httpGet"]["path"]

    def controller():
        wait_until(lambda: answers(g.mlflow + probe), "the MLflow Deployment's command", 240, proc, log)
        g.api.patch_status(f"/apis/apps/v1/namespaces/{NS}/deployments/amopo-mlflow",
                           {"conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]})

    g.background(controller)


def after_kueue(g: Guide, out: str) -> None:
    values = yaml.safe_load(VALUES.read_text())["parameters"]
    queue = g.stored("localqueues", NS, values["queue_name"])
    cluster_queue = g.stored("clusterqueues", None, queue["spec"]["clusterQueue"])
    assert any(r["name"] == "nvidia.com/gpu" for f in cluster_queue["spec"]["resourceGroups"][0]["flavors"]
               for r in f["resources"])


def after_runtime(g: Guide, out: str) -> None:
    runtime = g.stored("clustertrainingruntimes", None, "amopo-torch")
    assert runtime["spec"]["mlPolicy"]["torch"] == {}


def after_mlflow_wait(g: Guide, out: str) -> None:
    assert "condition met" in out
    with urllib.request.urlopen(g.mlflow + "/health", timeout=10) as response:
        assert response.read().strip() == b"OK"


def after_dry_run(g: Guide, out: str) -> None:
    """The dry run's objects carry the values file's namespace and accounts and the pushed image."""
    values = yaml.safe_load(VALUES.read_text())
    p = values["parameters"]
    folder = g.cwd / "out"
    assert "every object validates" in out, out
    run = yaml.safe_load((folder / "run.yaml").read_text())
    assert (run["namespace"], run["service_account"]) == (p["namespace"], values["run"]["service_account"])
    assert run["arguments"]["image"] == g.image and run["arguments"]["serving_runtime"] == "huggingface"
    steps = [d for d in yaml.safe_load_all((folder / "steps.yaml").read_text()) if d]
    assert len(steps) >= 10
    for pod in steps:
        assert pod["metadata"]["namespace"] == p["namespace"]
        assert pod["spec"]["serviceAccountName"] == values["run"]["service_account"]
        assert {c["image"] for c in pod["spec"]["containers"]} == {g.image}
    (trainjob,) = [d for d in yaml.safe_load_all((folder / "trainjob.yaml").read_text()) if d]
    assert trainjob["metadata"]["namespace"] == p["namespace"]
    assert trainjob["spec"]["trainer"]["image"] == g.image
    assert trainjob["spec"]["runtimeRef"]["name"] == "amopo-torch"
    assert trainjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == p["queue_name"]
    assert trainjob["spec"]["trainer"]["numNodes"] == p["num_nodes"]
    isvc = yaml.safe_load((folder / "inferenceservice.yaml").read_text())
    assert isvc["metadata"]["namespace"] == p["serving_namespace"]
    assert isvc["spec"]["predictor"]["serviceAccountName"] == p["serving_service_account"]
    predictor = isvc["spec"]["predictor"]
    assert "containers" not in predictor   # KServe's Hugging Face runtime, not the amopo image
    assert predictor["model"]["modelFormat"] == {"name": "huggingface"}
    assert predictor["model"]["storageUri"]   # the registered model's folder, known at run time
    assert str(predictor["model"]["resources"]["limits"]["nvidia.com/gpu"]) == str(p["serving_gpus"])
    start_hf_runtime(g, isvc)


def start_hf_runtime(g: Guide, isvc: dict) -> None:
    """The stand-in for KServe's Hugging Face runtime (tests/helpers/hf_runtime.py) on the host, on a
    free port, serving under the InferenceService's name (as the runtime does) the tiny model folder
    in place of what KServe's storage initializer downloads from storageUri."""
    g.serve_port = free_port()
    log = g.logs / "hf-runtime.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "helpers" / "hf_runtime.py"),
                                 "--model_dir", str(g.model_dir), "--model_name", isvc["metadata"]["name"],
                                 "--http_port", str(g.serve_port)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    g.procs.append(proc)
    g.results["serve"] = (proc, log, "/v2/health/ready")


def after_submit(g: Guide, out: str) -> None:
    """What submit sent, then the run's cluster side: a previous and this run's registered version
    (champion: this run's), the train step's TrainJob, the deploy step's InferenceService."""
    runs = [r for r in g.kfp_recorded if r["method"] == "POST" and r["path"].endswith("/apis/v2beta1/runs")]
    assert len(runs) == 1, [r["path"] for r in g.kfp_recorded]
    body = runs[0]["body"]
    assert body["service_account"] == "amopo-pipeline"
    args = body["runtime_config"]["parameters"]
    assert (args["image"], args["training_runtime"], args["serving_runtime"]) == (g.image, "amopo-torch",
                                                                                  "huggingface")
    assert args["namespace"] == NS and args["launcher"] == "trainjob"
    assert {r["headers"].get("authorization") for r in g.kfp_recorded} == {f"Bearer {SECRETS['KFP_TOKEN']}"}
    assert f"submitted run run-42 in namespace {NS} as amopo-pipeline: {g.kfp_url}/#/runs/details/run-42" in out
    run_the_pipeline_side(g)


def run_the_pipeline_side(g: Guide) -> None:
    from kubernetes import client

    from amopo.cluster.inferenceservice import deploy_inferenceservice
    from amopo.registry.resolve import hf_artifact_uri

    api = f"{g.mlflow}/api/2.0/mlflow"
    http_json(f"{api}/registered-models/create", {"name": "amopo"})
    for version in (1, 2):   # what register records: the version's artifacts in the S3 store
        http_json(f"{api}/model-versions/create",
                  {"name": "amopo", "source": f"s3://amopo-mlflow/artifacts/1/models/m-{version}/artifacts"})
    for alias in ("challenger", "champion"):   # this run registered version 2 and promoted it
        http_json(f"{api}/registered-models/alias", {"name": "amopo", "alias": alias, "version": "2"})
    storage_uri = hf_artifact_uri("models:/amopo/2", g.mlflow)
    g.results["storage_uri_2"] = storage_uri

    api_client = client.ApiClient(client.Configuration(host=g.api.url))
    (trainjob,) = [d for d in yaml.safe_load_all((g.cwd / "out" / "trainjob.yaml").read_text()) if d]
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        "trainer.kubeflow.org", "v1alpha1", NS, "trainjobs", trainjob)
    g.api.patch_status(f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/trainjobs/{trainjob['metadata']['name']}",
                       {"conditions": [{"type": "Complete", "status": "True", "reason": "JobsCompleted"}]})
    g.results["trainjob"] = trainjob["metadata"]["name"]

    manifest = yaml.safe_load((g.cwd / "out" / "inferenceservice.yaml").read_text())
    manifest["spec"]["predictor"]["model"]["storageUri"] = storage_uri   # the register step's output
    g.background(lambda: g.results.__setitem__("deployed", deploy_inferenceservice(
        manifest, api_client=api_client, timeout_s=300, poll_s=0.2, log=lambda line: None)))
    proc, log, probe = g.results["serve"]

    def kserve():   # Ready with its URL once the predictor's command answers its readiness probe
        wait_until(lambda: g.api.stored("inferenceservices", NS, "amopo") is not None, "the deploy step", 60)
        wait_until(lambda: answers(f"http://127.0.0.1:{g.serve_port}{probe}"), "the Hugging Face runtime", 300,
                   proc, log)
        g.api.patch_status(ISVC_PATH, {"url": f"http://127.0.0.1:{g.serve_port}",
                                       "conditions": [{"type": "Ready", "status": "True"}]})

    g.background(kserve)


TRAINER_STATUS = {"progressPercentage": 42, "estimatedRemainingSeconds": 192,
                  "metrics": [{"name": "loss", "value": "0.61"}, {"name": "accuracy", "value": "0.73"}],
                  "lastUpdatedTime": "2026-01-23T10:30:45Z"}


def post_trainer_status(g: Guide) -> None:
    """What the Trainer stores from a progress post (amopo/train/trainer_status.py's body), on the run's TrainJob."""
    g.subs["amopo-train-1a2b3c4d"] = g.results["trainjob"]
    g.api.patch_status(f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/trainjobs/{g.results['trainjob']}",
                       {"trainerStatus": TRAINER_STATUS})


def after_trainer_status(g: Guide, out: str) -> None:
    assert json.loads(out) == TRAINER_STATUS


def after_get_trainjobs(g: Guide, out: str) -> None:
    assert "trainjob.trainer.kubeflow.org/amopo-train " in out
    assert f"trainjob.trainer.kubeflow.org/{g.results['trainjob']} " in out
    assert "inferenceservice.serving.kserve.io/amopo " in out


def after_isvc_wait(g: Guide, out: str) -> None:
    assert "inferenceservice.serving.kserve.io/amopo condition met" in out


def after_url(g: Guide, out: str) -> None:
    assert g.env["URL"] == f"http://127.0.0.1:{g.serve_port}"
    deadline = time.monotonic() + 30
    while "deployed" not in g.results and time.monotonic() < deadline:
        g.check_threads()
        time.sleep(0.2)
    assert g.results["deployed"]["url"] == g.env["URL"] and g.results["deployed"]["action"] == "created"


def chat_body(marker: str) -> dict:
    """The request body (``-d``) of the guide's chat ``curl`` whose text contains ``marker``."""
    (command,) = [c for c in guide_commands(GUIDE.read_text())
                  if c.startswith("curl") and "/openai/v1/chat/completions" in c and marker in c]
    words = shlex.split(command)
    return json.loads(words[words.index("-d") + 1])


def prompt_tokens(g: Guide, messages: list[dict]) -> int:
    """The token count of ``messages`` rendered by the model's base chat template (the one under the
    steering part) with the generation prompt, tokenised as the runtime tokenises a prompt."""
    from transformers import AutoTokenizer

    from amopo.chat_template import base_template_of, read_base_template

    tokenizer = AutoTokenizer.from_pretrained(str(g.model_dir))
    prompt = tokenizer.apply_chat_template(messages, chat_template=base_template_of(read_base_template(g.model_dir)),
                                           add_generation_prompt=True, tokenize=False)
    return len(tokenizer(prompt)["input_ids"])


def after_chat(g: Guide, out: str) -> None:
    reply = json.loads(out)
    assert reply["model"] == "amopo" and reply["choices"][0]["message"]["role"] == "assistant"
    assert reply["usage"]["completion_tokens"] >= 1 and "dimension_targets" not in reply
    body = chat_body('"max_tokens": 64}')
    assert reply["usage"]["prompt_tokens"] == prompt_tokens(g, body["messages"])   # the plain prompt
    g.results["plain_prompt_tokens"] = reply["usage"]["prompt_tokens"]


def after_steered(g: Guide, out: str) -> None:
    """The steered prompt is the base template over the messages conditioned_messages builds; bad
    targets get a 400 with the message amopo serve gives, naming what the model steers."""
    from amopo.errors import SteeringError
    from amopo.steering import conditioned_messages, load_spec

    reply = json.loads(out)
    assert set(reply) == {"choices", "usage"}
    assert reply["choices"][0]["message"]["role"] == "assistant" and reply["usage"]["completion_tokens"] >= 1
    body = chat_body("chat_template_kwargs")
    targets = body["chat_template_kwargs"]["dimension_targets"]
    assert targets == {"helpfulness": 4, "correctness": 4}
    steered = conditioned_messages(load_spec(g.model_dir), body["messages"], targets)
    assert steered != body["messages"]
    assert reply["usage"]["prompt_tokens"] == prompt_tokens(g, steered) > g.results["plain_prompt_tokens"]

    for bad in ({"style": 4}, {"helpfulness": 7}, {"overall": 2}):
        with pytest.raises(SteeringError) as expected:
            conditioned_messages(load_spec(g.model_dir), body["messages"], bad)
        data = json.dumps({**body, "chat_template_kwargs": {"dimension_targets": bad}}).encode()
        request = urllib.request.Request(f"{g.env['URL']}/openai/v1/chat/completions", data=data, method="POST",
                                         headers={"content-type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=60)
        assert answer.value.code == 400
        error = json.loads(answer.value.read())["error"]
        assert error["type"] == "BadRequestError" and error["message"] == str(expected.value)
        assert error["message"].endswith("this model steers: overall (holistic: null); helpfulness (0 to 4); "
                                         "correctness (0 to 4); coherence (0 to 4)")
    assert answers(f"{g.env['URL']}/v2/health/ready")   # the server stays up


def port_forward_target(g: Guide) -> None:
    service = g.stored("services", NS, "amopo-mlflow")
    assert any(p["port"] == 5000 for p in service["spec"]["ports"])
    pod_labels = g.stored("deployments", NS, "amopo-mlflow")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert answers(g.mlflow + "/health")


def after_aliases(g: Guide, out: str) -> None:
    assert {a["alias"]: a["version"] for a in json.loads(out)} == {"challenger": "2", "champion": "2"}


def before_rollback_dry_run(g: Guide) -> None:
    """The InferenceService as the API server keeps it: a generation, observed by KServe and Ready."""
    g.api.request("PATCH", ISVC_PATH, {"metadata": {"generation": 1}}, "application/merge-patch+json")
    g.api.patch_status(ISVC_PATH, {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]})
    g.results["isvc_before_rollback"] = g.stored("inferenceservices", NS, "amopo")


def after_rollback_dry_run(g: Guide, out: str) -> None:
    from amopo.registry.resolve import hf_artifact_uri

    uri = hf_artifact_uri("models:/amopo/1", g.mlflow)
    assert uri != g.results["storage_uri_2"]
    assert f"[2/5] its storage URI: {uri}" in out
    assert f'{{"op": "replace", "path": "/spec/predictor/model/storageUri", "value": "{uri}"}}' in out
    assert "would move alias 'champion' from version 2 to version 1; nothing changed" in out
    assert g.stored("inferenceservices", NS, "amopo") == g.results["isvc_before_rollback"]
    got = http_json(f"{g.mlflow}/api/2.0/mlflow/registered-models/alias?name=amopo&alias=champion")
    assert got["model_version"]["version"] == "2"
    g.results["storage_uri_1"] = uri


def before_rollback(g: Guide) -> None:
    """KServe, as the test plays it: once the patch arrives, the new revision is not Ready for a
    moment, then Ready for the new generation."""
    def rolled_out():
        deadline = time.monotonic() + 60
        while g.stored("inferenceservices", NS, "amopo")["spec"]["predictor"]["model"]["storageUri"] == \
                g.results["storage_uri_2"]:
            assert time.monotonic() < deadline, "the rollback did not patch the InferenceService"
            time.sleep(0.05)
        g.results["rollout_started"] = time.monotonic()
        g.api.patch_status(ISVC_PATH, {"conditions": [{"type": "Ready", "status": "False",
                                                       "reason": "RevisionMissing"}]})
        time.sleep(1.5)
        g.api.patch_status(ISVC_PATH, {"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True"}]})

    g.background(rolled_out)


def after_rollback(g: Guide, out: str) -> None:
    predictor = g.stored("inferenceservices", NS, "amopo")["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == g.results["storage_uri_1"]
    deployed = yaml.safe_load((g.cwd / "out" / "inferenceservice.yaml").read_text())["spec"]["predictor"]
    assert {k: v for k, v in predictor["model"].items() if k != "storageUri"} == {   # nothing else changed
        k: v for k, v in deployed["model"].items() if k != "storageUri"}
    assert predictor["model"]["modelFormat"] == {"name": "huggingface"} and "containers" not in predictor
    assert time.monotonic() - g.results["rollout_started"] >= 1.4   # it waited for the rollout
    got = http_json(f"{g.mlflow}/api/2.0/mlflow/registered-models/alias?name=amopo&alias=champion")
    assert got["model_version"]["version"] == "1"
    assert "[4/5] InferenceService amopo/amopo: Ready after" in out
    assert "[5/5] alias 'champion' moved from version 2 to version 1" in out


@dataclass
class Step:
    first_line: str
    mode: str
    after: Callable[[Guide, str], None] | None = None
    before: Callable[[Guide], None] | None = None
    timeout_s: float = 120


STEPS = [
    # 1. Build and push the image
    Step("export REGISTRY=registry.example.com/ml        # your registry and path", "shell"),
    Step("export IMAGE=$REGISTRY/amopo:0.1.0-cu128", "shell", after_export_image),
    Step('bash scripts/build_image.sh --torch cu128 --tag "$IMAGE"', "build", after_build, timeout_s=1800),
    Step('buildah push "$IMAGE"', "push", after_push, timeout_s=600),
    # 2. The namespace and the secrets
    Step("kubectl apply -f k8s/base/namespace.yaml", "kubectl", after_namespace),
    Step("kubectl -n amopo create secret generic amopo-mlflow-db --dry-run=client -o yaml \\", "kubectl",
         after_db_secret),
    Step("kubectl -n amopo create secret generic amopo-s3 --dry-run=client -o yaml \\", "kubectl", after_s3_secret),
    Step("kubectl -n amopo annotate --overwrite secret amopo-s3 serving.kserve.io/s3-endpoint=s3.example.com \\",
         "kubectl", after_annotate),
    Step("kubectl -n amopo create secret generic amopo-judge --dry-run=client -o yaml \\", "kubectl",
         after_judge_secret),
    # 3. The manifests
    Step("mkdir -p my-cluster", "shell"),
    Step("cat > my-cluster/kustomization.yaml <<EOF", "shell", after_overlay_file),
    Step("kubectl apply -k my-cluster", "kubectl", after_apply_overlay),
    Step("kubectl apply -k k8s/kueue", "kubectl", after_kueue),
    Step("kubectl apply -f k8s/runtime/amopo-torch.yaml", "kubectl", after_runtime),
    Step("kubectl -n amopo wait --for=condition=Available deployment/amopo-mlflow --timeout=10m", "kubectl",
         after_mlflow_wait, timeout_s=300),
    # 4. Submit
    Step('amopo pipeline submit --dry-run --values k8s/values/cluster-gpu.yaml --param image="$IMAGE" \\', "dry-run",
         after_dry_run),
    Step("amopo pipeline submit --host https://kubeflow.example.com/pipeline --values k8s/values/cluster-gpu.yaml \\",
         "submit", after_submit),
    # 5. Watch
    Step("kubectl -n amopo get trainjobs,inferenceservices", "kubectl", after_get_trainjobs),
    Step("kubectl -n amopo get trainjob amopo-train-1a2b3c4d -o jsonpath='{.status.trainerStatus}'", "kubectl",
         after_trainer_status, before=post_trainer_status),
    # 6. The endpoint
    Step("kubectl -n amopo wait --for=condition=Ready inferenceservice/amopo --timeout=30m", "kubectl",
         after_isvc_wait, timeout_s=360),
    Step("URL=$(kubectl -n amopo get inferenceservice amopo -o jsonpath='{.status.url}')", "kubectl", after_url),
    Step("curl -s \"$URL/openai/v1/chat/completions\" -H 'content-type: application/json' \\", "endpoint",
         after_chat),
    Step("curl -s \"$URL/openai/v1/chat/completions\" -H 'content-type: application/json' \\", "endpoint",
         after_steered),
    # 7. Roll back
    Step("kubectl -n amopo port-forward svc/amopo-mlflow 5000:5000 &", "not run", before=port_forward_target),
    Step("export MLFLOW_TRACKING_URI=http://localhost:5000", "shell"),
    Step("curl -s \"$MLFLOW_TRACKING_URI/api/2.0/mlflow/registered-models/get?name=amopo\" | jq "
         "'.registered_model.aliases'", "mlflow", after_aliases),
    Step("amopo rollback --version 1 --dry-run           # what it would do; changes nothing", "rollback",
         after_rollback_dry_run, before=before_rollback_dry_run),
    Step("amopo rollback --version 1                     # the version to go back to", "rollback", after_rollback,
         before=before_rollback),
]
MODES = {"shell", "build", "push", "kubectl", "dry-run", "submit", "endpoint", "mlflow", "rollback", "not run"}


def test_every_command_of_the_guide_has_a_way_to_run():
    commands = guide_commands(GUIDE.read_text())
    assert [c.splitlines()[0] for c in commands] == [s.first_line for s in STEPS]
    assert {s.mode for s in STEPS} <= MODES
    what = {"kubectl": "kubectl ", "endpoint": "curl ", "mlflow": "curl ", "dry-run": "amopo pipeline submit --dry-run",
            "submit": "amopo pipeline submit --host", "build": "bash scripts/build_image.sh", "push": "buildah push",
            "rollback": "amopo rollback ", "not run": "kubectl -n amopo port-forward"}
    for step, command in zip(STEPS, commands):
        assert what.get(step.mode, "") in command, (step.mode, command)


def test_the_extractor_joins_continued_lines_quotes_and_here_documents():
    text = ("```bash\n# a comment\na --x \\\n  --y\nb '{\"k\":\n 1}'\ncat > f <<EOF\nk: $V\nEOF\n"
            "c # trailing\n```\n```python\nnot_this()\n```\n")
    assert guide_commands(text) == ["a --x \\\n  --y", "b '{\"k\":\n 1}'", "cat > f <<EOF\nk: $V\nEOF", "c # trailing"]


# --- the run ----------------------------------------------------------------------------------------

def _tools_missing() -> str | None:
    why = image_tools_missing()
    if why:
        return why
    missing = [t for t in ("kubectl", "docker-registry", "jq", "curl") if shutil.which(t) is None]
    return f"{', '.join(missing)} not installed (scripts/test_tools.sh installs them as root)" if missing else None


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Debian's docker-registry on a free 127.0.0.1 port, storing into a scratch folder."""
    folder = tmp_path_factory.mktemp("registry")
    port = free_port()
    (folder / "config.yml").write_text(yaml.safe_dump({
        "version": 0.1, "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(folder / "data")}},
        "http": {"addr": f"127.0.0.1:{port}"}}))
    log = folder / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["docker-registry", "serve", str(folder / "config.yml")], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/v2/"), "the local registry", 30, proc, log)
        conf = folder / "registries.conf"
        conf.write_text(f'[[registry]]\nlocation = "127.0.0.1:{port}"\ninsecure = true\n')
        yield f"127.0.0.1:{port}", conf
    finally:
        ImageRunner.stop(proc)
        shutil.rmtree(folder / "data", ignore_errors=True)   # the pushed image: about 1 GB


@pytest.fixture(scope="module")
def served_model(tmp_path_factory, tiny_model_dir) -> Path:
    """A tiny model folder with the conditioning spec of the values file's dimensions and the steering
    chat template compiled from it (what training on its data writes), readable by any uid."""
    from amopo.chat_template import write_chat_template
    from amopo.data.dimensions import KNOWN, default_dimensions
    from amopo.data.prompts import CONDITIONING_FILE, conditioning_spec

    p = yaml.safe_load(VALUES.read_text())["parameters"]
    dims = p.get("dimensions") or default_dimensions(p["data_format"])
    folder = tmp_path_factory.mktemp("served-model") / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / CONDITIONING_FILE).write_text(json.dumps(conditioning_spec([KNOWN[d] for d in dims])))
    write_chat_template(folder)
    subprocess.run(["chmod", "-R", "a+rX", str(folder.parent)], check=True)
    return folder


TOOLS_MISSING = _tools_missing()


@pytest.mark.slow
@pytest.mark.skipif(TOOLS_MISSING is not None, reason=TOOLS_MISSING or "")
def test_the_guide_runs_from_image_to_rollback(image, registry, served_model, tmp_path_factory):
    from helpers.kfp_api import kfp_api
    from helpers.kubectl_api import kube_api

    commands = guide_commands(GUIDE.read_text())
    assert [c.splitlines()[0] for c in commands] == [s.first_line for s in STEPS]
    registry_host, registries_conf = registry
    cwd = tmp_path_factory.mktemp("checkout")
    for entry in ROOT.iterdir():
        if entry.name not in {".git", "out", "my-cluster"}:
            (cwd / entry.name).symlink_to(entry)
    workspace = tmp_path_factory.mktemp("workspace")
    workspace.chmod(0o777)
    logs = tmp_path_factory.mktemp("guide-logs")
    record = ROOT / "build" / "image.json"
    saved_record = record.read_bytes() if record.is_file() else None
    runners: dict[str, ImageRunner] = {}

    def runner_for(tag: str) -> ImageRunner:
        if tag not in runners:
            runners[tag] = ImageRunner(tag, workspace)
        return runners[tag]

    with kube_api(CUSTOM_RESOURCES) as api, kfp_api() as (kfp_url, recorded):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "MLFLOW", "AWS_"))}
        env.update(SECRETS, KUBECONFIG=str(api.kubeconfig(logs / "kubeconfig.json")),
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                   CONTAINERS_REGISTRIES_CONF=str(registries_conf))
        g = Guide(cwd=cwd, env=env, api=api, registry=registry_host, kfp_url=f"{kfp_url}/pipeline",
                  kfp_recorded=recorded, runner_for=runner_for, workspace=workspace, model_dir=served_model,
                  fixture_image=image, logs=logs,
                  subs={"registry.example.com/ml": f"{registry_host}/ml", "--torch cu128": "--torch cpu",
                        "https://kubeflow.example.com/pipeline": f"{kfp_url}/pipeline"})
        timings = []
        try:
            for step, command in zip(STEPS, commands):
                started = time.monotonic()
                if step.before:
                    step.before(g)
                if step.mode != "not run":
                    for old, new in g.subs.items():
                        command = command.replace(old, new)
                    result = run_command(command, g, step.timeout_s)
                    assert result.returncode == 0, (f"`{command}` ({step.mode}) failed ({result.returncode}):\n"
                                                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
                    if step.after:
                        step.after(g, result.stdout)
                g.check_threads()
                timings.append(f"{time.monotonic() - started:6.1f}s  {step.mode:<8} {step.first_line[:70]}")
        finally:
            print("\n".join(timings))
            for proc in g.procs:
                ImageRunner.stop(proc)
            for r in runners.values():
                r.close()
            if saved_record is not None:
                record.write_bytes(saved_record)
            subprocess.run(["buildah", "rmi", g.env.get("IMAGE", "-")], capture_output=True)
