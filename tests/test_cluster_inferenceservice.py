"""InferenceService (KServe): the manifest against KServe's CRD schema and `amopo serve`'s real flags,
and deploy_inferenceservice (create, patch with a canary, Ready, failures, timeout) against kmock,
a real HTTP Kubernetes API emulator.

No KServe controller runs here, so in the deploy tests the test itself moves the InferenceService's
status through the API (PATCH .../inferenceservices/NAME/status), as the controller would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from amopo.cluster import ClusterError, deploy_inferenceservice, inferenceservice_manifest
from amopo.cluster.inferenceservice import GROUP, PLURAL, VERSION
from tests.helpers.kube import api_client, stored, until

CRDS = Path(__file__).resolve().parents[1].parent / "shared" / "crds"
ISVC_CRD = CRDS / "serving.kserve.io_inferenceservices.yaml"
needs_crds = pytest.mark.skipif(not ISVC_CRD.is_file(),
                                reason=f"CRD schemas not found at {CRDS} (../shared is only beside the project in CI)")
NS = "serving"
URI = "s3://mlflow/artifacts/1/models/m-abc/artifacts/model"


def _hf(**kw) -> dict:
    return inferenceservice_manifest("amopo", NS, URI, **kw)


def _custom(**kw) -> dict:
    base = dict(runtime="custom", image="registry.example.com/amopo:0.1.0", gpus=0, cpu="2", memory="4Gi",
                canary_traffic_percent=10, service_account="kserve-s3", env={"AMOPO_LOG": "info"},
                secret_env={"AMOPO_SERVE_API_KEY": "amopo-serve/api-key"}, node_selector={"pool": "cpu"},
                tolerations=[{"key": "dedicated", "operator": "Equal", "value": "serving", "effect": "NoSchedule"}],
                min_replicas=1, max_replicas=3, args=["--max-batch-size", "8"])
    base.update(kw)
    return inferenceservice_manifest("amopo", NS, URI, **base)


# --- the manifest ------------------------------------------------------------------------------------

@needs_crds
@pytest.mark.parametrize("make", [_hf, _custom, lambda: _hf(gpus=2, canary_traffic_percent=25, tolerations=[
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}], secret_env={"HF_TOKEN": "hf/token"})],
    ids=["huggingface-gpu", "custom-cpu-everything", "huggingface-canary"])
def test_inferenceservice_manifest_validates_against_the_crd(make):
    from amopo.cluster.crd_schema import validation_errors

    assert validation_errors(make(), ISVC_CRD) == []


@needs_crds
def test_the_validator_rejects_misplaced_fields_and_wrong_types():
    from amopo.cluster.crd_schema import validation_errors

    misplaced = _hf()
    misplaced["spec"]["predictor"]["model"]["nodeSelector"] = {"pool": "gpu"}  # belongs on the predictor
    errors = validation_errors(misplaced, ISVC_CRD)
    assert any(e.startswith("spec.predictor.model:") and "nodeSelector" in e for e in errors), errors
    wrong_type = _hf()
    wrong_type["spec"]["predictor"]["canaryTrafficPercent"] = "ten"
    assert any(e.startswith("spec.predictor.canaryTrafficPercent:") for e in validation_errors(wrong_type, ISVC_CRD))
    no_predictor = _hf()
    del no_predictor["spec"]["predictor"]
    assert any("'predictor' is a required property" in e for e in validation_errors(no_predictor, ISVC_CRD))


def test_huggingface_manifest_structure():
    m = _hf(gpus=2, tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}], node_selector={"gpu": "h100"})
    assert m["apiVersion"] == "serving.kserve.io/v1beta1" and m["kind"] == "InferenceService"
    predictor = m["spec"]["predictor"]
    model = predictor["model"]
    assert model["modelFormat"] == {"name": "huggingface"} and model["storageUri"] == URI
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert "name" not in model  # no empty container name
    assert predictor["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert predictor["nodeSelector"] == {"gpu": "h100"}
    assert "canaryTrafficPercent" not in predictor and "containers" not in predictor
    assert json.loads(json.dumps(m)) == m  # JSON-ready


def test_custom_manifest_runs_amopo_serve_with_flags_it_really_has():
    from amopo import config as config_lib
    from amopo.serving.server import ServeConfig

    m = _custom()
    predictor = m["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10 and predictor["serviceAccountName"] == "kserve-s3"
    assert predictor["nodeSelector"] == {"pool": "cpu"} and predictor["tolerations"][0]["value"] == "serving"
    assert predictor["minReplicas"] == 1 and predictor["maxReplicas"] == 3
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container" and container["command"] == ["amopo", "serve"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    env = {e["name"]: e for e in container["env"]}
    assert env["STORAGE_URI"]["value"] == URI
    assert env["AMOPO_SERVE_API_KEY"] == {"name": "AMOPO_SERVE_API_KEY", "valueFrom": {
        "secretKeyRef": {"name": "amopo-serve", "key": "api-key"}}}
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}

    parser = argparse.ArgumentParser()  # what `amopo serve` builds, without importing the other steps
    config_lib.add_arguments(parser, ServeConfig)
    parsed = config_lib.resolve(ServeConfig, None, vars(parser.parse_args(container["args"])))
    assert (parsed.model, parsed.host, parsed.port, parsed.model_name, parsed.max_batch_size) == (
        "/mnt/models", "0.0.0.0", 8080, "amopo", 8)


@pytest.mark.parametrize("kw, words", [
    (dict(runtime="custom"), "needs image"),
    (dict(runtime="vllm"), "not one of huggingface, custom"),
    (dict(canary_traffic_percent=150), "0..100"),
    (dict(gpus=-1), "gpus must be"),
    (dict(secret_env={"K": "no-key"}), "SECRET_NAME/KEY"),
], ids=["custom-without-image", "runtime", "canary", "gpus", "secret"])
def test_bad_settings_raise_one_clear_error(kw, words):
    with pytest.raises(ClusterError, match=words):
        _hf(**kw)


def test_a_bad_name_is_refused():
    with pytest.raises(ClusterError, match="DNS-1035"):
        inferenceservice_manifest("Amopo.v2", NS, URI)


# --- deploy_inferenceservice against the emulator ----------------------------------------------------

def _stored(kmock, name: str = "amopo"):
    return stored(kmock, PLURAL, NS, name, include_deleted=False)


def _call(manifest: dict, api_client, log, **kw):
    try:
        return deploy_inferenceservice(manifest, api_client=api_client, log=log, **kw)
    except BaseException as exc:  # noqa: BLE001 - handed back to the test to assert on
        return exc


def _start(kmock, manifest: dict, logs: list, **kw) -> asyncio.Task:
    """deploy_inferenceservice in a worker thread; the emulator serves on this test's event loop."""
    return asyncio.create_task(asyncio.to_thread(_call, manifest, api_client(kmock), logs.append, **kw))


async def _set_status(kmock, status: dict, name: str = "amopo") -> None:
    """Write the status through the API, as the KServe controller does."""
    url = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}/{name}/status"
    async with kmock.patch(url, json={"status": status},
                           headers={"Content-Type": "application/merge-patch+json"}) as resp:
        assert resp.status == 200, await resp.text()


def _ready(generation: int, url: str = "http://amopo.serving.example.com") -> dict:
    return {"observedGeneration": generation, "url": url,
            "address": {"url": "http://amopo-predictor.serving.svc.cluster.local"},
            "conditions": [{"type": "PredictorReady", "status": "True"}, {"type": "Ready", "status": "True"}]}


@pytest.mark.asyncio
async def test_create_then_ready_returns_the_url_and_an_update_patches_with_a_canary(kmock):
    """Create → the test marks it Ready → URL. Then a new version with 20% canary: the stored object
    is patched, and a Ready left over from generation 1 does not end the wait until generation 2 is
    observed. A third deploy without a canary removes the canary setting."""
    logs: list[str] = []
    task = _start(kmock, _hf(), logs, timeout_s=30, poll_s=0.05)
    await until(lambda: _stored(kmock) is not None)
    await _set_status(kmock, {"observedGeneration": 1, "conditions": [
        {"type": "Ready", "status": "Unknown", "reason": "RevisionMissing"}]})
    await asyncio.sleep(0.2)
    assert not task.done()
    await _set_status(kmock, _ready(1))
    result = await task
    assert not isinstance(result, BaseException), result
    assert result == {"name": "amopo", "namespace": NS, "url": "http://amopo.serving.example.com",
                      "address_url": "http://amopo-predictor.serving.svc.cluster.local", "action": "created",
                      "duration_s": result["duration_s"]}

    # The API server bumps metadata.generation on a spec change; the emulator does not, so the test does.
    _stored(kmock).patch({"metadata": {"generation": 2}})
    new_uri = URI.replace("m-abc", "m-def")
    task = asyncio.create_task(asyncio.to_thread(
        _call, inferenceservice_manifest("amopo", NS, new_uri, canary_traffic_percent=20), api_client(kmock),
        logs.append, timeout_s=30, poll_s=0.05))
    await until(lambda: _stored(kmock)["spec"]["predictor"]["model"]["storageUri"] == new_uri)
    assert _stored(kmock)["spec"]["predictor"]["canaryTrafficPercent"] == 20
    await asyncio.sleep(0.3)
    assert not task.done(), "returned on the Ready of the previous generation"
    await _set_status(kmock, _ready(2, url="http://amopo.serving.example.com"))
    result = await task
    assert not isinstance(result, BaseException), result
    assert result["action"] == "updated" and result["url"] == "http://amopo.serving.example.com"
    assert any("canary 20% of traffic" in line for line in logs)
    patches = [r for r in kmock["patch"] if not r.url.path.endswith("/status")]
    assert len(patches) == 1 and patches[0].headers["Content-Type"] == "application/merge-patch+json"

    result = await asyncio.to_thread(_call, _hf(), api_client(kmock), logs.append, timeout_s=30, poll_s=0.05)
    assert result["action"] == "updated"
    assert "canaryTrafficPercent" not in _stored(kmock)["spec"]["predictor"]


@pytest.mark.asyncio
async def test_a_false_ready_condition_with_a_reason_fails_with_it(kmock):
    """A rollout reason (MinimumReplicasUnavailable) keeps waiting; a failure reason ends it at once."""
    logs: list[str] = []
    task = _start(kmock, _hf(), logs, timeout_s=30, poll_s=0.05)
    await until(lambda: _stored(kmock) is not None)
    await _set_status(kmock, {"conditions": [{"type": "Ready", "status": "False",
                                              "reason": "MinimumReplicasUnavailable",
                                              "message": "Deployment does not have minimum availability."}]})
    await asyncio.sleep(0.3)
    assert not task.done()
    await _set_status(kmock, {"conditions": [
        {"type": "PredictorReady", "status": "False", "reason": "RevisionFailed",
         "message": "Revision \"amopo-predictor-00001\" failed: container exited with 1"},
        {"type": "Ready", "status": "False", "reason": "RevisionFailed"}]})
    result = await task
    assert isinstance(result, ClusterError), result
    assert "RevisionFailed" in str(result) and "container exited with 1" in str(result)
    assert result.reason == "RevisionFailed"
    assert _stored(kmock) is not None  # never deleted: it may be serving the previous version


@pytest.mark.asyncio
async def test_a_model_that_fails_to_load_ends_the_wait(kmock):
    logs: list[str] = []
    task = _start(kmock, _custom(), logs, timeout_s=30, poll_s=0.05)
    await until(lambda: _stored(kmock) is not None)
    await _set_status(kmock, {"modelStatus": {"transitionStatus": "BlockedByFailedLoad", "lastFailureInfo": {
        "reason": "ModelLoadFailed", "message": "no model.safetensors in /mnt/models"}}})
    result = await task
    assert isinstance(result, ClusterError) and result.reason == "ModelLoadFailed", result
    assert "no model.safetensors in /mnt/models" in str(result)


@pytest.mark.asyncio
async def test_no_ready_within_the_timeout_raises_with_the_last_reason(kmock):
    logs: list[str] = []
    task = _start(kmock, _hf(), logs, timeout_s=1.0, poll_s=0.05)
    await until(lambda: _stored(kmock) is not None)
    await _set_status(kmock, {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "RevisionMissing",
                                              "message": "Configuration is waiting for a Revision to become ready."}]})
    result = await task
    assert isinstance(result, ClusterError), result
    assert "not Ready within 1s" in str(result) and "RevisionMissing" in str(result)
    assert _stored(kmock) is not None
