"""`amopo rollback`: find the version, patch the InferenceService with its storage URI (JSON patch
guarded by a ``test`` of the runtime), wait for Ready, then move alias ``champion``.

The registry is real: MLflow on a sqlite store in a scratch folder with two registered versions
(``champion`` on version 2), and, for ``--registry kubeflow``, the real ``model-registry`` client
against the fake of its REST API (tests/helpers/model_registry_api.py). The Kubernetes API is the
project's emulated one (tests/helpers/kubectl_api.py: kmock plus JSON patch, bumping
``metadata.generation`` on a spec change as the API server does), because a real API server
cannot run here; no KServe controller runs either, so the test sets the InferenceService's status
through the API as the controller would. The command runs through ``amopo.cli.main`` in a worker
thread, the kubeconfig pointing at the emulator.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from amopo.cluster.inferenceservice import inferenceservice_manifest, storage_uri_patch
from helpers.kubectl_api import kube_api

NS = "amopo"
NAME = "amopo"
ISVC_PATH = f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices/{NAME}"
RESOURCES = {"serving.kserve.io/v1beta1/inferenceservices": {"kind": "InferenceService", "namespaced": True}}
SOURCE = "s3://amopo-mlflow/artifacts/1/models/m-{}/artifacts"   # what register records as a version's source
URI = {v: SOURCE.format(v) + "/model" for v in (1, 2)}               # the Hugging Face folder deploy serves


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    """A sqlite MLflow registry: ``amopo`` versions 1 and 2."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(NAME)
    for version in (1, 2):
        client.create_model_version(NAME, SOURCE.format(version))
    return uri


def _champion(uri: str) -> str:
    from mlflow import MlflowClient

    return str(MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(NAME, "champion").version)


@pytest.fixture
def registry(mlflow_uri):
    """The MLflow registry with ``champion`` on version 2 (what the last pipeline run promoted)."""
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri).set_registered_model_alias(NAME, "champion", "2")
    return mlflow_uri


@pytest.fixture
def api(tmp_path, monkeypatch):
    """The emulated API server holding InferenceService amopo/amopo as deploy made it (Hugging Face
    runtime on version 2's files), Ready for generation 1; the kubeconfig points at it."""
    import amopo.registry.rollback as rollback

    monkeypatch.setattr(rollback, "POLL_S", 0.05)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with kube_api(RESOURCES) as server:
        monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig(tmp_path / "kubeconfig.json")))
        manifest = inferenceservice_manifest(NAME, NS, URI[2], canary_traffic_percent=10)
        manifest["metadata"]["generation"] = 1
        server.request("POST", f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices", manifest)
        server.patch_status(ISVC_PATH, _ready(1))
        yield server


def _ready(generation: int) -> dict:
    return {"observedGeneration": generation, "url": "http://amopo.amopo.example.com",
            "conditions": [{"type": "PredictorReady", "status": "True"}, {"type": "Ready", "status": "True"}]}


def _stored(api) -> dict:
    return api.stored("inferenceservices", NS, NAME)


def _json_patches(api) -> list:
    return [r for r in api.handler["patch"]
            if r.headers.get("Content-Type", "").startswith("application/json-patch+json")]


class Run:
    """`amopo ARGS` in a worker thread: ``rc`` once done."""

    def __init__(self, args: list[str]):
        from amopo.cli import main

        self.rc = None
        self.thread = threading.Thread(target=lambda: setattr(self, "rc", main(args)), daemon=True)
        self.thread.start()

    def join(self, timeout_s: float = 60) -> int:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "amopo rollback did not return"
        return self.rc


def _until(predicate, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def _rollback(uri: str, *extra: str) -> list[str]:
    return ["rollback", "--version", "1", "--mlflow-tracking-uri", uri, "--connect-attempts", "1",
            "--timeout-minutes", "1", *extra]


def test_patch_then_ready_then_alias(registry, api, capsys):
    run = Run(_rollback(registry))
    _until(lambda: _stored(api)["spec"]["predictor"]["model"]["storageUri"] == URI[1])
    (request,) = _json_patches(api)
    assert json.loads(request.body) == [
        {"op": "test", "path": "/spec/predictor/model/modelFormat/name", "value": "huggingface"},
        {"op": "replace", "path": "/spec/predictor/model/storageUri", "value": URI[1]},
        {"op": "remove", "path": "/spec/predictor/canaryTrafficPercent"}]
    stored = _stored(api)
    assert "canaryTrafficPercent" not in stored["spec"]["predictor"] and stored["metadata"]["generation"] == 2
    time.sleep(0.5)   # Ready of generation 1 is not Ready for the patched spec
    assert run.thread.is_alive() and _champion(registry) == "2", "alias moved before the service was Ready"
    api.patch_status(ISVC_PATH, _ready(2))
    assert run.join() == 0
    assert _champion(registry) == "1"
    lines = capsys.readouterr().out.splitlines()
    steps = [line for line in lines if line.startswith("[")]
    assert [s[:5] for s in steps] == ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"], lines
    assert "amopo version 1 found in MLflow ('champion' is on version 2)" in steps[0]
    assert steps[1].endswith(URI[1]) and f"was {URI[2]}" in steps[2]
    assert "Ready after" in steps[3] and steps[4].endswith("alias 'champion' moved from version 2 to version 1")
    assert f"storage_uri: {URI[1]}" in lines


def test_a_service_that_is_not_ready_keeps_the_alias(registry, api, capsys):
    run = Run(_rollback(registry))
    _until(lambda: _stored(api)["spec"]["predictor"]["model"]["storageUri"] == URI[1])
    api.patch_status(ISVC_PATH, {"conditions": [
        {"type": "Ready", "status": "False", "reason": "RevisionFailed", "message": "container exited with 1"}]})
    assert run.join() == 2
    err = capsys.readouterr().err
    assert err.startswith("amopo rollback: error: InferenceService amopo/amopo was patched to amopo version 1 "
                          f"({URI[1]}) but is not Ready: "), err
    assert "RevisionFailed: container exited with 1" in err
    assert "alias 'champion' was not moved (still on version 2)" in err and "Traceback" not in err
    assert _champion(registry) == "2"


def test_an_unknown_version_names_the_model_and_its_versions(registry, api, capsys):
    rc = Run(["rollback", "--version", "7", "--mlflow-tracking-uri", registry, "--connect-attempts", "1"]).join()
    assert rc == 2
    err = capsys.readouterr().err
    assert err.strip() == "amopo rollback: error: registered model 'amopo' has no version 7; its versions: 1, 2"
    assert _json_patches(api) == [] and _stored(api)["spec"]["predictor"]["model"]["storageUri"] == URI[2]


@pytest.mark.parametrize("extra, message", [
    (["--version", "0"], "rollback needs --version N: the registered version to go back to"),
    (["--version", "1", "--timeout-minutes", "0"], "timeout_minutes must be > 0"),
    (["--version", "1", "--connect-attempts", "0"], "connect_attempts must be at least 1"),
    (["--version", "1", "--inference-service", "Not_A_Name"], "inference_service: "),
])
def test_bad_options_are_refused_before_anything_is_read(extra, message, capsys):
    from amopo.cli import main

    assert main(["rollback", *extra, "--mlflow-tracking-uri", "http://127.0.0.1:9"]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_service_names_namespace_and_name(registry, api, capsys):
    assert Run(_rollback(registry, "--inference-service", "other", "--namespace", "serving")).join() == 2
    err = capsys.readouterr().err
    assert "InferenceService serving/other not found: no InferenceService named 'other' in namespace 'serving'" in err
    assert "Traceback" not in err and _champion(registry) == "2"


def test_dry_run_prints_the_plan_and_changes_nothing(registry, api, capsys):
    before = _stored(api)
    assert Run(_rollback(registry, "--dry-run")).join() == 0
    out = capsys.readouterr().out
    assert _stored(api) == before and _json_patches(api) == [] and _champion(registry) == "2"
    assert f"[2/5] its storage URI: {URI[1]}" in out
    assert '"op": "test", "path": "/spec/predictor/model/modelFormat/name", "value": "huggingface"' in out
    assert "[5/5] dry run: would move alias 'champion' from version 2 to version 1; nothing changed" in out


def test_the_custom_runtime_is_patched_where_deploy_puts_the_location():
    manifest = inferenceservice_manifest(NAME, NS, URI[2], runtime="custom", image="registry.example.com/amopo:1",
                                         env={"AMOPO_LOG": "info"})
    patch = storage_uri_patch(manifest, URI[1])
    assert patch == [{"op": "test", "path": "/spec/predictor/containers/0/env/0/name", "value": "STORAGE_URI"},
                     {"op": "replace", "path": "/spec/predictor/containers/0/env/0/value", "value": URI[1]}]
    import jsonpatch

    patched = jsonpatch.apply_patch(manifest, patch)
    assert patched["spec"]["predictor"]["containers"][0]["env"][0] == {"name": "STORAGE_URI", "value": URI[1]}


def test_rollback_on_the_kubeflow_model_registry(api, monkeypatch, capsys):
    """--registry kubeflow: the version by id, its model artifact's URI served, ``amopo.alias`` moved."""
    from helpers.model_registry_api import FakeModelRegistry, load_spec

    from amopo.registry import kubeflow

    monkeypatch.setenv("AMOPO_MODEL_REGISTRY_TOKEN", "test-token")
    with FakeModelRegistry(load_spec()[0], token="test-token") as fake:
        client = kubeflow.connect(fake.url, attempts=1)
        for version in (1, 2):
            client.register_model(NAME, URI[version], version=f"run-{version}", model_format_name="huggingface",
                                  model_format_version="1")
        first, second = kubeflow.versions(client, NAME)
        kubeflow.set_alias(client, NAME, "champion", second)

        run = Run(["rollback", "--registry", "kubeflow", "--model-registry-url", fake.url, "--version", first.id,
                   "--connect-attempts", "1", "--timeout-minutes", "1"])
        _until(lambda: _stored(api)["spec"]["predictor"]["model"]["storageUri"] == URI[1])
        time.sleep(0.3)
        assert kubeflow.find_by_alias(client, NAME, "champion").id == second.id
        api.patch_status(ISVC_PATH, _ready(2))
        assert run.join() == 0
        assert kubeflow.find_by_alias(client, NAME, "champion").id == first.id
        assert kubeflow.aliases_of(kubeflow.get_version(client, NAME, version=second.id)) == []
        out = capsys.readouterr().out
        assert f"amopo version 'run-1' (id {first.id}) found in the Kubeflow Model Registry" in out
        assert fake.violations == []

        assert Run(["rollback", "--registry", "kubeflow", "--model-registry-url", fake.url, "--version", "99",
                    "--connect-attempts", "1"]).join() == 2
        err = capsys.readouterr().err
        assert (f"registered model 'amopo' has no version with id 99; its versions: id {first.id} ('run-1'), "
                f"id {second.id} ('run-2')") in err
