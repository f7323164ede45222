"""TrainJob (Kubeflow Trainer v2): the manifest against the Trainer's CRD schema, the launch command,
kube client loading, and run_trainjob against kmock, a real HTTP Kubernetes API emulator.

No Trainer controller runs here, so in the run_trainjob tests the test itself moves the TrainJob's
status through the API (PATCH .../trainjobs/NAME/status), as the controller would.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from amopo.cluster import ClusterError, launch_command, load_kube_client, run_trainjob, trainjob_manifest
from amopo.cluster.trainjob import GROUP, IMAGE_PROJECT_DIR, NCCL_ENV, PLURAL, VERSION, accelerate_config_file
from tests.helpers.dockerfile import image_layout, repository_file
from tests.helpers.kube import api_client, stored, until

ROOT = Path(__file__).resolve().parents[1]
CRDS = Path(__file__).resolve().parents[1].parent / "shared" / "crds"
TRAINJOB_CRD = CRDS / "trainer.kubeflow.org_trainjobs.yaml"
needs_crds = pytest.mark.skipif(not TRAINJOB_CRD.is_file(),
                                reason=f"CRD schemas not found at {CRDS} (../shared is only beside the project in CI)")
NS = "team-a"
TRAIN_ARGS = ["--data", "/workspace/data", "--base-model", "/workspace/base", "--output", "/workspace/train",
              "--max-steps", "100"]


def _full(**kw) -> dict:
    base = dict(num_nodes=2, gpus_per_node=8, cpu="16", memory="200Gi", distributed="fsdp",
                env={"MLFLOW_TRACKING_URI": "http://mlflow.kubeflow:5000"},
                secret_env={"AWS_ACCESS_KEY_ID": "s3-credentials/access-key",
                            "AWS_SECRET_ACCESS_KEY": "s3-credentials/secret-key"},
                node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                workspace_pvc="amopo-workspace", service_account="amopo-trainer", image_pull_secrets=["registry"],
                shm_size="32Gi", active_deadline_s=86400, labels={"team": "a"})
    base.update(kw)
    return trainjob_manifest("amopo-train-1", NS, "registry.example.com/amopo:0.1.0", TRAIN_ARGS, **base)


def _pod_patch(manifest: dict) -> dict:
    (patch,) = manifest["spec"]["runtimePatches"]
    (job,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert job["name"] == "node"
    return job["template"]["spec"]["template"]["spec"]


# --- the manifest ------------------------------------------------------------------------------------

@needs_crds
@pytest.mark.parametrize("kw", [
    dict(),
    dict(num_nodes=1, gpus_per_node=1, distributed="ddp", shm_size=None, workspace_pvc=None),
    dict(num_nodes=1, gpus_per_node=4, distributed="fsdp", env={"NCCL_DEBUG": "INFO"}),
    dict(num_nodes=3, gpus_per_node=0, procs_per_node=2, distributed="ddp", node_selector=None, tolerations=None,
         workspace_pvc=None, shm_size=None, service_account=None, image_pull_secrets=None, active_deadline_s=None),
], ids=["gpu-fsdp-2-nodes-everything", "one-gpu-ddp", "one-node-fsdp-nccl-override", "cpu-3-nodes-no-patches"])
def test_trainjob_manifest_validates_against_the_crd(kw):
    from amopo.cluster.crd_schema import validation_errors

    assert validation_errors(_full(**kw), TRAINJOB_CRD) == []


@needs_crds
def test_the_validator_rejects_misplaced_fields_wrong_types_and_missing_parts():
    from amopo.cluster.crd_schema import validation_errors

    good = _full()
    misplaced = json.loads(json.dumps(good))
    misplaced["spec"]["trainer"]["nodeSelector"] = {"a": "b"}  # pod fields belong in runtimePatches
    errors = validation_errors(misplaced, TRAINJOB_CRD)
    assert any(e.startswith("spec.trainer:") and "nodeSelector" in e for e in errors), errors

    wrong_type = json.loads(json.dumps(good))
    wrong_type["spec"]["trainer"]["numNodes"] = "two"
    assert any(e.startswith("spec.trainer.numNodes:") for e in validation_errors(wrong_type, TRAINJOB_CRD))

    bad_quantity = json.loads(json.dumps(good))
    bad_quantity["spec"]["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] = "eight"
    assert validation_errors(bad_quantity, TRAINJOB_CRD)

    no_runtime = json.loads(json.dumps(good))
    del no_runtime["spec"]["runtimeRef"]
    assert any("'runtimeRef' is a required property" in e for e in validation_errors(no_runtime, TRAINJOB_CRD))

    wrong_kind = dict(good, kind="PyTorchJob")
    assert validation_errors(wrong_kind, TRAINJOB_CRD) == ["kind: 'PyTorchJob' is not 'TrainJob'"]


def test_trainjob_manifest_puts_every_setting_where_the_schema_says():
    m = _full()
    spec, trainer = m["spec"], m["spec"]["trainer"]
    assert spec["runtimeRef"] == {"name": "torch-distributed", "apiGroup": GROUP, "kind": "ClusterTrainingRuntime"}
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 8
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    assert trainer["resourcesPerNode"]["requests"] == {"cpu": "16", "memory": "200Gi"}
    assert trainer["command"] == ["torchrun", "--module", "amopo", "train"]
    assert trainer["args"] == [*TRAIN_ARGS, "--fsdp-config", f"{IMAGE_PROJECT_DIR}/configs/accelerate/fsdp.yaml"]
    assert spec["activeDeadlineSeconds"] == 86400

    env = {e["name"]: e for e in trainer["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow.kubeflow:5000"
    for var, key in (("AWS_ACCESS_KEY_ID", "access-key"), ("AWS_SECRET_ACCESS_KEY", "secret-key")):
        assert env[var] == {"name": var, "valueFrom": {"secretKeyRef": {"name": "s3-credentials", "key": key}}}

    pod = _pod_patch(m)
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["serviceAccountName"] == "amopo-trainer"
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["workspace"]["persistentVolumeClaim"] == {"claimName": "amopo-workspace"}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}
    (container,) = pod["containers"]
    assert container["name"] == "node"
    assert {v["mountPath"] for v in container["volumeMounts"]} == {"/workspace", "/dev/shm"}
    assert "nodeSelector" not in trainer and "tolerations" not in trainer
    assert m["metadata"]["labels"]["team"] == "a"


def test_cpu_nodes_get_no_gpu_and_no_runtime_patch_when_nothing_needs_one():
    m = trainjob_manifest("amopo-cpu", NS, "img", TRAIN_ARGS, num_nodes=2, gpus_per_node=0, procs_per_node=3)
    trainer = m["spec"]["trainer"]
    assert "nvidia.com/gpu" not in trainer["resourcesPerNode"]["limits"]
    assert trainer["numProcPerNode"] == 3
    assert trainer["command"] == ["torchrun", "--module", "amopo", "train"]
    assert "runtimePatches" not in m["spec"] and "env" not in trainer


def test_every_strategy_and_size_runs_the_same_torchrun_command():
    assert launch_command() == launch_command(distributed="fsdp") == ["torchrun", "--module", "amopo", "train"]
    # `python -m amopo` is what `torchrun --module amopo` runs.
    assert (ROOT / "amopo" / "__main__.py").is_file()
    assert accelerate_config_file("ddp") is None
    assert accelerate_config_file("fsdp") == f"{IMAGE_PROJECT_DIR}/configs/accelerate/fsdp.yaml"


def _image_paths(trainer: dict, workspace: str) -> list[str]:
    """The absolute paths in the container's command and args (``--flag=PATH`` too), outside ``workspace``."""
    tokens = [t.split("=", 1)[-1] for t in trainer["command"] + trainer["args"]]
    return [t for t in tokens if t.startswith("/") and not (t + "/").startswith(workspace.rstrip("/") + "/")]


def missing_in_image(manifest: dict, dockerfile: str, workspace: str = "/workspace") -> list[str]:
    """The image paths ``manifest``'s container names that the Dockerfile's COPY lines do not fill from
    a file of this repository (empty: every one is there)."""
    layout = image_layout(dockerfile, ROOT)
    problems = []
    for path in _image_paths(manifest["spec"]["trainer"], workspace):
        source = repository_file(layout, path, ROOT)
        if source is None or not source.is_file():
            problems.append(f"{path}: {'no COPY puts it there' if source is None else f'{source} does not exist'}")
    return problems


DISTRIBUTED_SIZES = [(d, n) for d in ("ddp", "fsdp") for n in (1, 2)]


@pytest.mark.parametrize("distributed, num_nodes", DISTRIBUTED_SIZES,
                         ids=[f"{d}-{n}-nodes" for d, n in DISTRIBUTED_SIZES])
def test_every_file_the_container_names_is_in_the_image_the_dockerfile_builds(distributed, num_nodes):
    m = _full(distributed=distributed, num_nodes=num_nodes, gpus_per_node=8)
    trainer = m["spec"]["trainer"]
    assert trainer["command"][0] == "torchrun"
    assert not [t for t in trainer["command"] + trainer["args"] if "$(" in t], "no kubelet $(VAR) expansion"
    paths = _image_paths(trainer, "/workspace")
    assert paths == ([accelerate_config_file("fsdp")] if distributed == "fsdp" else [])
    assert trainer["args"][:len(TRAIN_ARGS)] == TRAIN_ARGS
    assert missing_in_image(m, (ROOT / "Dockerfile").read_text()) == []


@pytest.mark.parametrize("change", ["workdir", "copy-configs"])
def test_a_dockerfile_that_moves_or_drops_the_configs_is_caught(change):
    dockerfile = (ROOT / "Dockerfile").read_text()
    old = {"workdir": f"WORKDIR {IMAGE_PROJECT_DIR}\n", "copy-configs": "COPY configs ./configs\n"}[change]
    assert old in dockerfile
    changed = dockerfile.replace(old, "WORKDIR /srv/app\n" if change == "workdir" else "")
    assert missing_in_image(_full(distributed="fsdp"), changed) == [
        f"{accelerate_config_file('fsdp')}: no COPY puts it there"]


def test_deepspeed_is_refused_with_the_reason():
    for call in (lambda: launch_command(distributed="deepspeed"), lambda: accelerate_config_file("deepspeed"),
                 lambda: _full(distributed="deepspeed")):
        with pytest.raises(ClusterError, match="'deepspeed' is not supported: DeepSpeed is not part of the image "
                                               "and has never been run by the project's tests; use 'fsdp'"):
            call()


# --- NCCL defaults -------------------------------------------------------------------------------------

def _plain_env(manifest: dict) -> dict:
    return {e["name"]: e.get("value") for e in manifest["spec"]["trainer"].get("env", [])}


@pytest.mark.parametrize("distributed", ["ddp", "fsdp"])
def test_gpu_trainjobs_get_the_nccl_defaults(distributed):
    assert {"TORCH_NCCL_ASYNC_ERROR_HANDLING", "NCCL_DEBUG"} <= set(NCCL_ENV)
    env = _plain_env(_full(distributed=distributed))
    assert {k: env[k] for k in NCCL_ENV} == NCCL_ENV
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.kubeflow:5000"
    plain = trainjob_manifest("amopo-gpu", NS, "img", TRAIN_ARGS, gpus_per_node=1)
    assert _plain_env(plain) == NCCL_ENV


@needs_crds
def test_the_callers_env_wins_over_the_nccl_defaults():
    from amopo.cluster.crd_schema import validation_errors

    m = _full(env={"NCCL_DEBUG": "INFO", "MLFLOW_TRACKING_URI": "http://mlflow:5000"},
              secret_env={"TORCH_NCCL_ASYNC_ERROR_HANDLING": "nccl/mode"})
    env = {e["name"]: e for e in m["spec"]["trainer"]["env"]}
    assert env["NCCL_DEBUG"] == {"name": "NCCL_DEBUG", "value": "INFO"}
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"]["valueFrom"]["secretKeyRef"] == {"name": "nccl", "key": "mode"}
    assert [e["name"] for e in m["spec"]["trainer"]["env"]].count("NCCL_DEBUG") == 1
    assert validation_errors(m, TRAINJOB_CRD) == []


def test_cpu_trainjobs_get_no_nccl_settings_and_may_shard_too():
    m = trainjob_manifest("amopo-cpu", NS, "img", TRAIN_ARGS, num_nodes=2, distributed="fsdp",
                          env={"OMP_NUM_THREADS": "1"})
    assert _plain_env(m) == {"OMP_NUM_THREADS": "1"}
    assert m["spec"]["trainer"]["args"][-2:] == ["--fsdp-config", accelerate_config_file("fsdp")]


@pytest.mark.parametrize("kw, words", [
    (dict(name="Amopo_Train"), "DNS-1035"),
    (dict(distributed="horovod"), "distributed 'horovod' is not one of ddp, fsdp"),
    (dict(train_args=["--data", "x", "--fsdp-config=/tmp/f.yaml"]), "choose distributed='fsdp'"),
    (dict(secret_env={"TOKEN": "just-a-value"}), "must be 'SECRET_NAME/KEY'"),
    (dict(env={"A": "1"}, secret_env={"A": "s/k"}), "'A' is set twice"),
    (dict(memory="lots"), "not a Kubernetes quantity"),
    (dict(num_nodes=0), "num_nodes must be"),
    (dict(tolerations=[{"key": "a", "operatr": "Exists"}]), "unknown field"),
    (dict(train_args=["train", "--data", "x"]), "drop the leading 'train'"),
], ids=["name", "strategy", "own-fsdp-config", "secret-ref", "twice", "quantity", "nodes", "toleration", "args"])
def test_bad_settings_raise_one_clear_error(kw, words):
    args = dict(name="amopo-train", namespace=NS, image="img", train_args=TRAIN_ARGS)
    args.update(kw)
    with pytest.raises(ClusterError, match=words):
        trainjob_manifest(**args)


# --- kube client ---------------------------------------------------------------------------------------

def test_load_kube_client_uses_kubeconfig_outside_a_pod(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(ClusterError, match="no Kubernetes configuration"):
        load_kube_client()
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://10.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert load_kube_client().configuration.host == "https://10.0.0.1:6443"


def test_load_kube_client_in_a_pod_without_a_service_account_says_so(monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    if Path("/var/run/secrets/kubernetes.io/serviceaccount/token").exists():
        pytest.skip("this machine has a service account token")
    with pytest.raises(ClusterError, match="in-cluster Kubernetes configuration failed"):
        load_kube_client()


# --- run_trainjob against the emulator ---------------------------------------------------------------

def _job(name: str) -> dict:
    return trainjob_manifest(name, NS, "img", TRAIN_ARGS, num_nodes=2, gpus_per_node=0)


def _stored(kmock, name: str):
    return stored(kmock, PLURAL, NS, name)


async def _set_conditions(kmock, name: str, *conditions: dict) -> None:
    """Write status conditions through the API, as the Trainer controller does."""
    url = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}/{name}/status"
    body = {"status": {"conditions": [{"lastTransitionTime": "2026-01-01T00:00:00Z", "message": "", **c}
                                      for c in conditions]}}
    async with kmock.patch(url, json=body, headers={"Content-Type": "application/merge-patch+json"}) as resp:
        assert resp.status == 200, await resp.text()


def _call(manifest: dict, api_client, log, **kw):
    """run_trainjob, with any exception returned rather than raised, so that a KeyboardInterrupt from
    the worker thread does not reach the event loop the emulator serves on."""
    try:
        return run_trainjob(manifest, api_client=api_client, log=log, **kw)
    except BaseException as exc:  # noqa: BLE001 - handed back to the test to assert on
        return exc


def _start(kmock, manifest: dict, log, **kw) -> asyncio.Task:
    return asyncio.create_task(asyncio.to_thread(_call, manifest, api_client(kmock), log, **kw))


@pytest.mark.asyncio
async def test_run_trainjob_follows_pod_logs_and_returns_on_complete(kmock):
    """The test plays the controller: it adds a trainer pod with logs, then sets Complete=True."""
    name = "amopo-ok"
    pods = kmock.resource("v1/pods")
    kmock.objects[pods, NS, f"{name}-node-0-0"] = {"metadata": {"name": f"{name}-node-0-0", "namespace": NS, "labels": {
        "jobset.sigs.k8s.io/jobset-name": name, "jobset.sigs.k8s.io/replicatedjob-name": "node"}}}
    kmock[f"get /api/v1/namespaces/{NS}/pods/{name}-node-0-0/log"] << (
        b"2026-01-01T00:00:01.000000000Z step 1 loss 0.69\n2026-01-01T00:00:02.000000000Z step 2 loss 0.52\n")
    logs: list[str] = []
    task = _start(kmock, _job(name), logs.append, timeout_s=30, poll_s=0.05)
    await until(lambda: _stored(kmock, name) is not None)
    stored = _stored(kmock, name)
    assert stored["spec"]["trainer"]["numNodes"] == 2 and stored["kind"] == "TrainJob"
    await until(lambda: f"[{name}-node-0-0] step 2 loss 0.52" in logs)
    await _set_conditions(kmock, name, {"type": "Complete", "status": "True", "reason": "JobsCompleted",
                                        "message": "jobset completed"})
    result = await task
    assert not isinstance(result, BaseException), result
    assert result["name"] == name and result["namespace"] == NS and result["condition"] == "Complete"
    assert result["reason"] == "JobsCompleted" and result["duration_s"] >= 0
    assert logs.count(f"[{name}-node-0-0] step 1 loss 0.69") == 1  # each line once, however many polls
    assert not _stored(kmock, name).deleted


@pytest.mark.asyncio
async def test_run_trainjob_raises_with_the_failure_reason_and_keeps_the_job(kmock):
    """The test plays the controller and sets Failed=True with a reason; no pods exist (tolerated)."""
    name = "amopo-bad"
    logs: list[str] = []
    task = _start(kmock, _job(name), logs.append, timeout_s=30, poll_s=0.05)
    await until(lambda: _stored(kmock, name) is not None)
    await _set_conditions(kmock, name, {"type": "Failed", "status": "True", "reason": "FailedJobs",
                                        "message": "jobset failed: node-1 exited with code 2"})
    result = await task
    assert isinstance(result, ClusterError), result
    assert "FailedJobs" in str(result) and "node-1 exited with code 2" in str(result)
    assert f"TrainJob {NS}/{name} failed" in str(result)
    assert result.reason == "FailedJobs" and result.name == name
    assert not _stored(kmock, name).deleted  # kept for inspection


@pytest.mark.asyncio
async def test_run_trainjob_times_out_and_deletes_the_job(kmock):
    """The test never completes the job (it only marks it suspended, as Kueue would)."""
    name = "amopo-slow"
    logs: list[str] = []
    task = _start(kmock, _job(name), logs.append, timeout_s=1.0, poll_s=0.05)
    await until(lambda: _stored(kmock, name) is not None)
    await _set_conditions(kmock, name, {"type": "Suspended", "status": "True", "reason": "Suspended"})
    result = await task
    assert isinstance(result, ClusterError) and "timed out after 1s" in str(result), result
    assert _stored(kmock, name).deleted
    assert any("suspended" in line for line in logs)


@pytest.mark.asyncio
async def test_run_trainjob_deletes_the_job_on_keyboard_interrupt(kmock):
    """Ctrl-C while waiting: the interrupt comes from the log callback, inside the wait."""
    name = "amopo-ctrl-c"

    def log(line: str) -> None:
        if "waiting for it to complete" in line:
            raise KeyboardInterrupt

    result = await _start(kmock, _job(name), log, timeout_s=30, poll_s=0.05)
    assert isinstance(result, KeyboardInterrupt)
    assert _stored(kmock, name).deleted


SIGTERM_SCRIPT = """
import json, sys
from kubernetes import client
from amopo.cluster import ClusterError, run_trainjob
api = client.ApiClient(client.Configuration(host=sys.argv[1]))
try:
    run_trainjob(json.loads(sys.argv[2]), api_client=api, timeout_s=60, poll_s=0.05, log=lambda s: print(s, flush=True))
except ClusterError as exc:
    print(f"error: {exc}", flush=True)
    sys.exit(2)
"""


@pytest.mark.asyncio
async def test_run_trainjob_deletes_the_job_on_sigterm(kmock):
    """A pipeline step is stopped with SIGTERM: the TrainJob goes with it."""
    name = "amopo-sigterm"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SIGTERM_SCRIPT, str(kmock.url), json.dumps(_job(name)), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env={**os.environ})
    try:
        await until(lambda: _stored(kmock, name) is not None, timeout_s=60)
        await asyncio.sleep(0.3)  # let it enter the wait loop
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
    text = out.decode()
    assert proc.returncode == 2, text
    assert "cancelled by SIGTERM; the TrainJob was deleted" in text
    assert _stored(kmock, name).deleted


@pytest.mark.asyncio
async def test_run_trainjob_refuses_an_existing_name(kmock):
    name = "amopo-dup"
    trainjobs = kmock.resource(f"{GROUP}/{VERSION}/{PLURAL}")
    kmock.objects[trainjobs, NS, name] = {"metadata": {"name": name, "namespace": NS}}
    result = await _start(kmock, _job(name), lambda line: None)
    assert isinstance(result, ClusterError) and "create failed (HTTP 409" in str(result), result
