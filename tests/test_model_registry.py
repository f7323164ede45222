"""`registry: kubeflow`: register, promote and resolve on the Kubeflow Model Registry, through the real
``model-registry`` client against a fake of its REST API.

The fake (tests/helpers/model_registry_api.py) stands in for the server because the server cannot
run here: it is a Go service with a database, with no Python or Debian package. So that the fake
cannot drift from the real API unnoticed, every request and response it sees is checked against the
client's generated pydantic models and, where a snapshot of kubeflow/model-registry is at hand
(``$AMOPO_MODEL_REGISTRY_OPENAPI`` or a fetched mirror), against the OpenAPI spec's schemas; each
test fails on any mismatch. The project keeps no copy of the spec.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from amopo.errors import ConfigError
from amopo.registry import RegistryError
from helpers.model_registry_api import PREFIX, FakeModelRegistry, SpecChecker, load_spec
from helpers.registry import make_training_output, write_eval_metrics

TOKEN = "test-token"
NAME = "amopo"
STORAGE = "s3://mlpipeline/v2/artifacts/amopo/run-abc/train/model/model"
EVAL = dict(pref_accuracy__plain=0.7, pref_accuracy__mean_dimensions=0.7, winrate__lc=0.55)


@pytest.fixture(scope="module")
def spec():
    found, _ = load_spec()
    return found


@pytest.fixture
def fake(spec, monkeypatch):
    monkeypatch.setenv("AMOPO_MODEL_REGISTRY_TOKEN", TOKEN)
    with FakeModelRegistry(spec, token=TOKEN) as server:
        yield server
    assert server.violations == []
    assert set(server.authorizations) == {f"Bearer {TOKEN}"}


@pytest.fixture
def outputs(tmp_path, tiny_model_dir):
    """make(label, accuracy) → (train_dir, eval metrics) of the tiny model with that plain accuracy."""
    def make(label: str, accuracy: float = 0.7):
        train = make_training_output(tmp_path / label / "train", tiny_model_dir)
        evals = write_eval_metrics(tmp_path / label / "eval" / "metrics.json", **{**EVAL, "pref_accuracy__plain": accuracy})
        return train, evals
    return make


def _register(fake, train, evals, **kw) -> dict:
    from amopo.registry.register import RegisterConfig, register

    cfg = RegisterConfig(train_dir=str(train), eval_metrics=str(evals), registered_model_name=NAME, registry="kubeflow",
                         model_registry_url=fake.url, connect_attempts=1, **kw)
    cfg.validate()
    return register(cfg)


def _promote(fake, **kw) -> dict:
    from amopo.registry.promote import PromoteConfig, promote

    cfg = PromoteConfig(registered_model_name=NAME, registry="kubeflow", model_registry_url=fake.url, connect_attempts=1, **kw)
    cfg.validate()
    return promote(cfg)


def _digest(train, evals) -> str:
    from amopo.registry.inputs import digest, read_eval_metrics, read_training_output

    trained = read_training_output(train)
    return digest(trained.model_dir, {**trained.metrics, **read_eval_metrics(evals)})


def _client(fake):
    from amopo.registry.kubeflow import connect

    return connect(fake.url, attempts=1)


def test_register_records_the_uri_the_pipeline_run_as_source_and_the_metrics(fake, outputs):
    train, evals = outputs("a")
    summary = _register(fake, train, evals, pipeline_run_id="run-abc", pipeline_namespace="team-a",
                        storage_uri=STORAGE)
    assert summary["version_name"] == "run-abc" and not summary["reused"]
    assert summary["model_uri"] == f"models:/{NAME}/run-abc" and summary["hf_artifact_uri"] == STORAGE

    client = _client(fake)
    mv = client.get_model_version(NAME, "run-abc")
    assert int(mv.id) == summary["version"]
    props = mv.custom_properties
    assert props["metric.pref_accuracy/plain"] == 0.7
    assert props["metric.winrate/lc"] == 0.55
    assert props["metric.heldout_final/accuracy/overall"] == 0.75      # the training summary, flattened
    assert props["amopo.alias"] == "challenger"
    assert props["amopo.training_run_id"] == "train-run-1" and props["amopo.objective"] == "amopo"
    assert props["amopo.digest"] == _digest(train, evals)
    # on the wire: metrics are doubles, lineage strings
    raw = fake.version(NAME, "run-abc")["customProperties"]
    assert raw["metric.pref_accuracy/plain"] == {"metadataType": "MetadataDoubleValue", "double_value": 0.7}
    assert raw["amopo.alias"] == {"metadataType": "MetadataStringValue", "string_value": "challenger"}

    artifact = client.get_model_artifact(NAME, "run-abc")
    assert artifact.uri == STORAGE
    assert (artifact.model_source_kind, artifact.model_source_class) == ("pipelines", "pipelinerun")
    assert (artifact.model_source_group, artifact.model_source_id) == ("team-a", "run-abc")
    assert artifact.model_format_name == "huggingface" and artifact.model_format_version


def test_a_rerun_reuses_the_version_with_the_same_digest_and_refuses_another(fake, outputs):
    train, evals = outputs("a")
    first = _register(fake, train, evals, pipeline_run_id="run-abc", pipeline_namespace="team-a", storage_uri=STORAGE)
    again = _register(fake, train, evals, pipeline_run_id="run-abc", pipeline_namespace="team-a", storage_uri=STORAGE)
    assert again["reused"] and again["version"] == first["version"] and again["hf_artifact_uri"] == STORAGE
    assert len(fake.model_versions) == 1 and len(fake.artifacts) == 1

    held = fake.version(NAME, "run-abc")["customProperties"]["amopo.digest"]["string_value"]
    other_train, other_evals = outputs("b", accuracy=0.9)
    with pytest.raises(RegistryError, match="already registered with digest") as err:
        _register(fake, other_train, other_evals, pipeline_run_id="run-abc", storage_uri=STORAGE)
    assert re.findall(r"[0-9a-f]{64}", str(err.value)) == [held, _digest(other_train, other_evals)]
    assert len(fake.model_versions) == 1


def test_without_a_run_id_versions_are_numbered_and_matched_by_digest(fake, outputs):
    one = _register(fake, *outputs("a", 0.7))
    two = _register(fake, *outputs("b", 0.8))
    assert (one["version_name"], two["version_name"]) == ("1", "2")
    assert one["hf_artifact_uri"].startswith("file://") and one["hf_artifact_uri"].endswith("/a/train/model")
    # the challenger alias moved to version 2
    props = {v: fake.version(NAME, v)["customProperties"]["amopo.alias"]["string_value"] for v in ("1", "2")}
    assert props == {"1": "none", "2": "challenger"}
    again = _register(fake, *outputs("a", 0.7))
    assert again["reused"] and again["version_name"] == "1"
    assert len(fake.model_versions) == 2


def test_the_gate_reads_metrics_from_the_metadata_and_promote_moves_champion(fake, outputs):
    from amopo.registry.kubeflow import aliases_of, find_by_alias

    first = _register(fake, *outputs("a", 0.7), pipeline_run_id="run-1")
    decided = _promote(fake, version=first["version"])
    assert decided["promoted"] and decided["champion_version"] == first["version"]

    second = _register(fake, *outputs("b", 0.8), pipeline_run_id="run-2")
    decided = _promote(fake)                                     # the candidate: the challenger
    assert decided["promoted"] and decided["version"] == second["version"]
    assert any("0.8 vs champion 0.7" in r for r in decided["reasons"])
    client = _client(fake)
    assert find_by_alias(client, NAME, "champion").name == "run-2"
    assert "champion" not in aliases_of(client.get_model_version(NAME, "run-1"))
    assert set(aliases_of(client.get_model_version(NAME, "run-2"))) == {"challenger", "champion"}

    third = _register(fake, *outputs("c", 0.6), pipeline_run_id="run-3")
    decided = _promote(fake, version=third["version"], gate_thresholds=["winrate/lc>=0.5"])
    assert not decided["promoted"] and decided["champion_version"] == second["version"]
    props = client.get_model_version(NAME, "run-3").custom_properties
    assert props["amopo.gate.decision"] == "rejected" and "does not beat" in props["amopo.gate.reasons"]
    assert props["amopo.gate.compared_with"] == "run-2"
    assert find_by_alias(client, NAME, "champion").name == "run-2"


def test_resolve_for_deploy_returns_the_artifact_uri(fake, outputs):
    from amopo.registry.resolve import resolve

    summary = _register(fake, *outputs("a"), pipeline_run_id="run-abc", storage_uri=STORAGE)
    _promote(fake, version=summary["version"])
    for uri in ("models:/amopo@champion", "models:/amopo@challenger", "models:/amopo/run-abc"):
        found = resolve(uri, registry="kubeflow", model_registry_url=fake.url, attempts=1)
        assert (found.name, found.version, found.hf_artifact_uri) == (NAME, summary["version"], STORAGE)
    with pytest.raises(RegistryError, match="no version with alias 'staging'"):
        resolve("models:/amopo@staging", registry="kubeflow", model_registry_url=fake.url, attempts=1)
    with pytest.raises(RegistryError, match="no version 'run-x'"):
        resolve("models:/amopo/run-x", registry="kubeflow", model_registry_url=fake.url, attempts=1)


def test_registry_options_are_checked_and_offered_on_the_command_line():
    from amopo.cli import build_parser
    from amopo.registry.promote import PromoteConfig
    from amopo.registry.register import RegisterConfig

    with pytest.raises(ConfigError, match="expected one of mlflow, kubeflow"):
        RegisterConfig(train_dir="x", registry="sagemaker").validate()
    with pytest.raises(ConfigError, match="needs model_registry_url"):
        PromoteConfig(registry="kubeflow").validate()
    with pytest.raises(ConfigError, match="http://HOST:PORT"):
        PromoteConfig(registry="kubeflow", model_registry_url="model-registry:8080").validate()
    assert RegisterConfig().registry == PromoteConfig().registry == "mlflow"
    parser = build_parser()
    for command in ("register", "promote"):
        args = parser.parse_args([command, "--registry", "kubeflow", "--model-registry-url", "http://mr:8080"])
        assert (args.registry, args.model_registry_url) == ("kubeflow", "http://mr:8080")
    assert not any("token" in name for name in RegisterConfig.__dataclass_fields__)


def test_an_unreachable_registry_is_a_registry_error(outputs, monkeypatch):
    import socket

    monkeypatch.setenv("AMOPO_MODEL_REGISTRY_TOKEN", TOKEN)

    from amopo.registry.register import RegisterConfig, register

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    train, evals = outputs("a")
    cfg = RegisterConfig(train_dir=str(train), eval_metrics=str(evals), registry="kubeflow",
                         model_registry_url=f"http://127.0.0.1:{port}", connect_attempts=2, connect_backoff_s=0.01)
    with pytest.raises(RegistryError, match="cannot reach the Kubeflow Model Registry"):
        register(cfg)


def test_the_checks_of_the_fake_find_what_the_spec_and_the_client_models_forbid(spec):
    from helpers.model_registry_api import _check_with_client_models

    bad_value = {"name": "v", "registeredModelId": "1",
                 "customProperties": {"k": {"metadataType": "MetadataDoubleValue", "string_value": "x"}}}
    assert _check_with_client_models("POST", PREFIX + "/model_versions", 201, bad_value,
                                     {"id": "2", "name": "v", "registeredModelId": "1"})
    if spec is None:
        pytest.skip(load_spec()[1])
    checker = SpecChecker(spec)
    good = {"name": "v", "registeredModelId": "1",
            "customProperties": {"k": {"metadataType": "MetadataDoubleValue", "double_value": 0.5}}}
    assert checker.check_request("POST", PREFIX + "/model_versions", {}, good) == []
    assert checker.check_request("POST", PREFIX + "/model_versions", {}, bad_value)
    assert checker.check_request("POST", PREFIX + "/model_versions", {}, {"name": "v"})       # no registeredModelId
    assert checker.check_request("GET", PREFIX + "/registered_models", {"pageSize": ["0"]}, None)
    assert checker.check_request("GET", PREFIX + "/registered_models", {"bogus": ["1"]}, None)
    assert checker.check_request("DELETE", PREFIX + "/model_versions/1", {}, None)
    assert checker.check_request("GET", PREFIX + "/model_versions/12", {}, None) == []
    assert checker.check_request("GET", PREFIX + "/model_versions/0abc", {}, None)            # not an id
    assert checker.check_response("GET", PREFIX + "/model_version", 404, {"code": "not_found"})   # no message
    artifact = {"artifactType": "model-artifact", "uri": "s3://b/k", "name": "m", "modelSourceKind": "pipelines"}
    assert checker.check_request("POST", PREFIX + "/model_versions/2/artifacts", {}, artifact) == []
    assert checker.check_request("POST", PREFIX + "/model_versions/2/artifacts", {},
                                 {**artifact, "artifactType": "no-such-type"})


def test_every_call_was_checked_against_the_spec(spec, fake, outputs):
    if spec is None:
        pytest.skip(load_spec()[1])
    summary = _register(fake, *outputs("a"), pipeline_run_id="run-abc", storage_uri=STORAGE)
    _promote(fake, version=summary["version"])
    assert fake.checker is not None and fake.requests
    methods = {(m, p.rsplit("/", 1)[-1] if not p.rsplit("/", 1)[-1].isdigit() else "{id}") for m, p, _, _ in fake.requests}
    assert ("PATCH", "{id}") in methods and ("POST", "model_versions") in methods and ("POST", "artifacts") in methods


def test_the_storage_uri_of_a_pipeline_model_artifact(tmp_path):
    from amopo.registry.kubeflow import local_path, storage_uri_for

    assert storage_uri_for("minio://mlpipeline/v2/artifacts/amopo/run/train/model", "/minio/x") \
        == "s3://mlpipeline/v2/artifacts/amopo/run/train/model/model"
    assert storage_uri_for("s3://bucket/a/model/", "/s3/bucket/a/model") == "s3://bucket/a/model/model"
    assert storage_uri_for("gs://b/a", "/gcs/b/a") == "gs://b/a/model"
    local = storage_uri_for(str(tmp_path / "art"), str(tmp_path / "art"))
    assert local == (tmp_path / "art" / "model").as_uri() and local_path(local) == str(tmp_path / "art" / "model")
    assert local_path("s3://b/k") == "s3://b/k"


def test_a_registration_interrupted_before_its_artifact_is_completed_by_the_rerun(fake, outputs, monkeypatch):
    from model_registry import ModelRegistry

    train, evals = outputs("a")

    async def broken(self, mv, name, uri, /, **kwargs):
        raise OSError("connection reset")

    with monkeypatch.context() as patched:
        patched.setattr(ModelRegistry, "_register_model_artifact", broken)
        with pytest.raises(RegistryError, match="connection reset"):
            _register(fake, train, evals, pipeline_run_id="run-abc", pipeline_namespace="team-a", storage_uri=STORAGE)
    assert len(fake.model_versions) == 1 and not fake.artifacts
    again = _register(fake, train, evals, pipeline_run_id="run-abc", pipeline_namespace="team-a", storage_uri=STORAGE)
    assert again["reused"] and again["hf_artifact_uri"] == STORAGE
    (artifact,) = fake.artifacts_of(fake.version(NAME, "run-abc")["id"])
    assert (artifact["uri"], artifact["modelSourceId"], artifact["modelSourceGroup"]) == (STORAGE, "run-abc", "team-a")


def test_the_pipeline_steps_register_deploy_and_promote_on_the_kubeflow_registry(fake, outputs, tmp_path, monkeypatch):
    """register → deploy → promote as the pipeline runs them (the components' functions), with
    registry=kubeflow: the pipeline run is the model's source, deploy serves what the registry holds."""
    import amopo.cluster.inferenceservice as inferenceservice
    import amopo.serving.local_deploy as local_deploy
    from kfp import dsl

    from components.deploy import deploy_model
    from components.promote import promote_model
    from components.register import register_model

    train, evals = outputs("a")
    model = dsl.Model(name="model", uri=str(train), metadata={})
    results = dsl.Artifact(name="results", uri=str(evals.parent), metadata={})
    version, model_uri, storage_uri = register_model.python_func(
        model=model, results=results, registered_name=NAME, mlflow_tracking_uri="", registry="kubeflow",
        model_registry_url=fake.url, pipeline_run_id="run-e2e", pipeline_namespace="amopo")
    assert model_uri == f"models:/{NAME}/run-e2e" and storage_uri == (train / "model").as_uri()
    (artifact,) = fake.artifacts_of(str(version))
    assert (artifact["modelSourceKind"], artifact["modelSourceClass"]) == ("pipelines", "pipelinerun")
    assert (artifact["modelSourceGroup"], artifact["modelSourceId"], artifact["uri"]) == ("amopo", "run-e2e", storage_uri)

    started, applied = [], []
    monkeypatch.setattr(local_deploy, "start_local_server", lambda model, state, **kw: started.append(model) or
                        {"url": "http://127.0.0.1:9", "log_path": str(tmp_path / "serve.log")})
    monkeypatch.setattr(inferenceservice, "deploy_inferenceservice", lambda manifest, **kw: applied.append(manifest) or
                        {"address_url": "http://amopo.amopo.svc.cluster.local", "url": ""})
    common = dict(model_uri=model_uri, service_name=NAME, mlflow_tracking_uri="", namespace="amopo",
                  runtime="huggingface", image="", gpus=0, cpu="2", memory="8Gi", accelerator_type="", node_selector={},
                  tolerations=[], canary_traffic_percent=100, service_account="", state_dir=str(tmp_path / "serving"),
                  run_id="run-e2e", timeout_minutes=1, queue_name="", registry="kubeflow", model_registry_url=fake.url)
    url, served = deploy_model.python_func(storage_uri=storage_uri, target="local", **common)
    assert (url, served) == ("http://127.0.0.1:9", NAME) and started == [str(train / "model")]
    deploy_model.python_func(storage_uri="s3://not/what/the/registry/holds", target="kserve", **common)
    assert storage_uri in json.dumps(applied[0]) and "s3://not" not in json.dumps(applied[0])

    decision = dsl.Markdown(name="decision", uri=str(tmp_path / "decision.md"), metadata={})
    promoted, champion = promote_model.python_func(
        registered_name=NAME, version=version, gate_metric="pref_accuracy/plain", min_improvement=0.0,
        thresholds="winrate/lc>=0.5", mlflow_tracking_uri="", decision=decision, registry="kubeflow",
        model_registry_url=fake.url)
    assert (promoted, champion) == (True, version)
    assert "promoted to champion" in (tmp_path / "decision.md").read_text()
    props = fake.version(NAME, "run-e2e")["customProperties"]
    assert props["amopo.alias"]["string_value"] == "challenger,champion"
    assert props["amopo.gate.decision"]["string_value"] == "promoted"


@pytest.mark.slow
def test_a_local_pipeline_run_registers_gates_deploys_and_promotes_on_the_kubeflow_registry(fake, tmp_path,
                                                                                          tiny_model_dir):
    """The whole pipeline (KFP's local runner, each step a subprocess) with registry=kubeflow against
    the fake: the run's id is the model's source, the served model is the one the registry points at,
    and promotion puts champion on the version."""
    from helpers.records import arithmetic_pairs, write_jsonl
    from pipelines.local_run import run_local

    write_jsonl(tmp_path / "train.jsonl", arithmetic_pairs(8))
    write_jsonl(tmp_path / "eval.jsonl", arithmetic_pairs(4, offset=50))
    summary = run_local(dict(
        data_source=str(tmp_path / "train.jsonl"), eval_source=str(tmp_path / "eval.jsonl"),
        base_model=str(tiny_model_dir), judge=str(tiny_model_dir), max_length=128, max_steps=2, learning_rate=1e-3,
        train_options={"warmup_ratio": 0.0, "progress": False}, eval_num_instructions=2, eval_max_new_tokens=4,
        lm_eval_tasks="", endpoint_check_tasks="", compare_head_to_head=False,
        eval_options={"judge_top_k": 10000, "lc_bootstrap": 10, "progress": False}, gate_against_base=False,
        registry="kubeflow", model_registry_url=fake.url), work_dir=tmp_path / "work")
    assert summary["final_state"] == "SUCCEEDED" and summary["promoted"] is True
    ((version_id, version),) = fake.model_versions.items()
    (artifact,) = fake.artifacts_of(version_id)
    run_name = Path(summary["run_dir"]).name
    assert (artifact["modelSourceKind"], artifact["modelSourceClass"]) == ("pipelines", "pipelinerun")
    assert artifact["modelSourceId"] and artifact["modelSourceId"] in (version["name"], run_name)
    assert artifact["uri"].startswith("file://") and Path(artifact["uri"][len("file://"):], "config.json").is_file()
    props = version["customProperties"]
    assert props["amopo.alias"]["string_value"] == "challenger,champion"
    assert "metric.pref_accuracy/plain" in props
