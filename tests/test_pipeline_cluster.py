"""The cluster path of `amopo pipeline submit`: values files, the run's namespace and ServiceAccount,
authentication against a stand-in KFP API server (tests/helpers/kfp_api.py), and the dry run, whose
TrainJob and InferenceService must be the ones the train and deploy steps create."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import yaml

from tests.helpers.kfp_api import kfp_api

ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "k8s" / "values"
GPU_VALUES, DEV_VALUES = VALUES / "cluster-gpu.yaml", VALUES / "cpu-dev.yaml"
COMMITTED = ROOT / "pipelines" / "amopo_pipeline.yaml"
CRDS = ROOT.parent / "shared" / "crds"
needs_crds = pytest.mark.skipif(not CRDS.is_dir(),
                                reason=f"{CRDS} is absent: CRD schemas are only beside the project in CI")
SIZED_STEPS = {"evaluate-model": "eval", "compare-objectives": "compare", "check-endpoint": "endpoint_check"}


def pipeline(capsys, *argv: str) -> tuple[int, str, str]:
    """`amopo pipeline ARGV` in this process: (exit status, stdout, stderr)."""
    from pipelines.cli import main

    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _write(path: Path, doc) -> Path:
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def _service_accounts() -> set[str]:
    docs = yaml.safe_load_all((ROOT / "k8s" / "base" / "rbac.yaml").read_text())
    return {d["metadata"]["name"] for d in docs if d and d["kind"] == "ServiceAccount"}


# --- values files -------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [GPU_VALUES, DEV_VALUES], ids=["cluster-gpu", "cpu-dev"])
def test_the_shipped_values_files_hold_a_cluster_run_in_real_parameters(path):
    from pipelines.params import check_pod_resources, pipeline_parameters
    from pipelines.values import load_values

    values = load_values(path)   # every key a pipeline parameter of the right type, or it raises
    p = values.parameters
    assert (p["launcher"], p["deploy_target"]) == ("trainjob", "kserve")
    assert p["mlflow_tracking_uri"].startswith("http://amopo-mlflow.")   # the in-cluster server, not sqlite
    assert p["namespace"] == p["serving_namespace"] == "amopo"
    assert values.run["service_account"] == "amopo-pipeline" and p["serving_service_account"] == "amopo-serving"
    assert {values.run["service_account"], p["serving_service_account"]} <= _service_accounts()
    assert p["image"] and not p["image"].endswith(":latest")
    for key in [*(f"{step}_{r}" for step in SIZED_STEPS.values() for r in ("cpu", "memory", "gpus")),
                "trainjob_cpu", "trainjob_memory", "serving_cpu", "serving_memory", "queue_name"]:
        assert key in p, f"{path.name} leaves {key} at its laptop default"
    check_pod_resources({**pipeline_parameters(), **p})


def test_the_gpu_values_judge_with_an_endpoint_and_queue_their_work():
    from pipelines.values import load_values

    p = load_values(GPU_VALUES).parameters
    assert p["judge"].startswith("http://") and p["judge"].endswith("/v1") and p["judge_model_name"]
    assert p["queue_name"] and p["gpus_per_node"] >= 1 and p["eval_gpus"] == "1"


@pytest.mark.parametrize("doc, words", [
    ({"parameters": {"max_stepz": 3}}, "parameters.max_stepz: not a pipeline parameter; known: "),
    ({"parameters": {"max_steps": "many"}}, "parameters.max_steps: expected int, got 'many'"),
    ({"parameters": {"node_selector": ["gpu"]}}, "parameters.node_selector: expected dict"),
    ({"params": {"max_steps": 3}}, "params: unknown section"),
    ({"run": {"namespace": "team-a"}}, "run.namespace: unknown run setting; known: service_account, experiment"),
    ({"run": {"service_account": 3}}, "run.service_account: expected a non-empty string, got 3"),
    ("- max_steps\n", "expected a mapping"),
], ids=["unknown-parameter", "wrong-type", "wrong-structure", "unknown-section", "unknown-run-setting",
        "bad-run-setting", "not-a-mapping"])
def test_a_bad_values_file_is_refused_naming_the_file_and_the_key(tmp_path, capsys, doc, words):
    path = _write(tmp_path / "bad.yaml", doc)
    rc, _, err = pipeline(capsys, "submit", "--dry-run", "--values", str(path), "--output-dir", str(tmp_path / "o"))
    assert rc == 2 and str(path) in err and words in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_params_and_flags_override_the_values_file_and_numbers_are_text_for_strings(tmp_path):
    from pipelines.cli import _parser, submission

    path = _write(tmp_path / "v.yaml", {"run": {"service_account": "a", "experiment": "e"},
                                        "parameters": {"max_steps": 5, "eval_cpu": 4, "learning_rate": 1}})
    plan = submission(_parser().parse_args(["submit", "--dry-run", "--values", str(path), "--param", "max_steps=7",
                                            "--service-account", "b"]))
    assert plan["params"] == {"max_steps": 7, "eval_cpu": "4", "learning_rate": 1.0}
    assert (plan["service_account"], plan["experiment"], plan["namespace"]) == ("b", "e", "amopo")


def test_a_pod_size_kfp_could_not_use_is_refused_before_submission(tmp_path, capsys):
    with kfp_api() as (url, recorded):
        rc, _, err = pipeline(capsys, "submit", "--host", url, "--values", str(GPU_VALUES), "--param", "eval_gpus=0")
    assert rc == 2 and "eval_gpus: '0' must be a GPU count >= 1, or empty for none" in err
    assert recorded == []


# --- where the run goes and as whom --------------------------------------------------------------

def test_a_run_namespace_without_the_workspace_pvc_is_refused_before_anything_is_sent(capsys):
    with kfp_api() as (url, recorded):
        rc, _, err = pipeline(capsys, "submit", "--host", url, "--values", str(GPU_VALUES), "--namespace", "team-a")
    assert rc == 2 and recorded == []
    assert "run namespace 'team-a' is not the namespace parameter 'amopo'" in err
    assert "workspace PVC 'amopo-workspace'" in err and "--param namespace=team-a" in err


def test_submit_sends_the_run_to_its_namespace_as_its_service_account_with_the_token(capsys, monkeypatch):
    monkeypatch.setenv("KFP_TOKEN", "tok-123")
    with kfp_api() as (url, recorded):
        rc, out, err = pipeline(capsys, "submit", "--host", url, "--values", str(GPU_VALUES), "--token-env",
                                "KFP_TOKEN", "--package", str(COMMITTED), "--run-name", "first", "--param",
                                "max_steps=3")
    assert rc == 0, err
    assert "submitted run run-42 in namespace amopo as amopo-pipeline" in out
    assert recorded and {r["headers"].get("authorization") for r in recorded} == {"Bearer tok-123"}
    experiments = [r for r in recorded if r["path"].endswith("/experiments")]
    assert experiments and all(r["query"]["namespace"] == ["amopo"] for r in experiments)
    (run,) = recorded.bodies("POST", "/apis/v2beta1/runs")
    assert run["service_account"] == "amopo-pipeline" and run["display_name"] == "first"
    arguments = run["runtime_config"]["parameters"]
    assert arguments["image"] == "registry.example.com/amopo:0.1.0-cu128" and arguments["max_steps"] == 3
    assert arguments["deploy_target"] == "kserve" and arguments["eval_gpus"] == "1"


def test_a_token_file_and_a_session_cookie_reach_the_server(capsys, monkeypatch, tmp_path):
    token = _write(tmp_path / "token", "file-tok\n")
    monkeypatch.setenv("KFP_COOKIE", "oauth2_proxy_kubeflow=abc")
    with kfp_api() as (url, recorded):
        rc, _, err = pipeline(capsys, "submit", "--host", url, "--token-file", str(token), "--cookies-env",
                              "KFP_COOKIE", "--package", str(COMMITTED))
    assert rc == 0, err
    assert {r["headers"].get("authorization") for r in recorded} == {"Bearer file-tok"}
    assert {r["headers"].get("cookie") for r in recorded} == {"oauth2_proxy_kubeflow=abc"}
    (run,) = recorded.bodies("POST", "/apis/v2beta1/runs")
    assert "service_account" not in run or not run["service_account"]   # KFP's default without one


def test_https_is_trusted_through_the_ca_given(capsys, tmp_path):
    cryptography = pytest.importorskip("cryptography")  # noqa: F841 (only to make the certificate)
    from tests.helpers.kfp_api import self_signed_certificate

    cert, key = self_signed_certificate(tmp_path)
    with kfp_api(cert, key) as (url, recorded):
        rc, _, err = pipeline(capsys, "submit", "--host", url, "--package", str(COMMITTED))
        assert rc == 2 and f"submitting to {url} failed" in err and "CERTIFICATE_VERIFY_FAILED" in err, err
        assert recorded == []
        rc, out, err = pipeline(capsys, "submit", "--host", url, "--package", str(COMMITTED), "--ca-cert", cert)
    assert rc == 0, err
    assert recorded.bodies("POST", "/apis/v2beta1/runs")


@pytest.mark.parametrize("argv, words", [
    (["--token-env", "AMOPO_TEST_UNSET"], "--token-env AMOPO_TEST_UNSET: the environment variable is not set"),
    (["--token-file", "{tmp}/missing"], "no token there (missing or empty file)"),
    (["--token-env", "HOME", "--token-file", "{tmp}/t"], "--token-env and --token-file: choose one way"),
    (["--cookies-env", "AMOPO_TEST_UNSET"], "--cookies-env AMOPO_TEST_UNSET: the environment variable is not set"),
    (["--ca-cert", "{tmp}/ca.pem"], "--ca-cert {tmp}/ca.pem: no such file"),
    (["--iap-other-client-id", "x"], "need --iap-client-id"),
], ids=["unset-token", "missing-token-file", "two-ways", "unset-cookie", "missing-ca", "iap-without-client"])
def test_bad_credentials_are_one_clear_error_before_anything_is_contacted(capsys, monkeypatch, tmp_path, argv,
                                                                          words):
    monkeypatch.delenv("AMOPO_TEST_UNSET", raising=False)
    _write(tmp_path / "t", "x")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with kfp_api() as (url, recorded):
        rc, _, err = pipeline(capsys, "submit", "--host", url, "--package", str(COMMITTED), *argv)
    assert rc == 2 and words.replace("{tmp}", str(tmp_path)) in err, err
    assert recorded == []


def test_google_iap_hands_kfp_its_oauth_client_ids(capsys, monkeypatch):
    """kfp turns IAP client ids into a Google token itself, which needs Google; a recording client
    stands in for it here."""
    import kfp

    seen = {}

    class RecordingClient:
        def __init__(self, **kwargs):
            seen["client"] = kwargs

        def create_run_from_pipeline_package(self, package, **kwargs):
            seen["run"] = kwargs
            return type("Result", (), {"run_id": "run-iap"})()

    monkeypatch.setattr(kfp, "Client", RecordingClient)
    monkeypatch.setenv("IAP_SECRET", "desk-secret")
    rc, out, err = pipeline(capsys, "submit", "--host", "https://kfp.example.com", "--package", str(COMMITTED),
                            "--iap-client-id", "iap.apps.googleusercontent.com", "--iap-other-client-id",
                            "desk.apps.googleusercontent.com", "--iap-other-client-secret-env", "IAP_SECRET",
                            "--service-account", "amopo-pipeline")
    assert rc == 0, err
    assert seen["client"] == {"host": "https://kfp.example.com", "namespace": "amopo",
                              "client_id": "iap.apps.googleusercontent.com",
                              "other_client_id": "desk.apps.googleusercontent.com",
                              "other_client_secret": "desk-secret"}
    assert seen["run"]["namespace"] == "amopo" and seen["run"]["service_account"] == "amopo-pipeline"


# --- the dry run --------------------------------------------------------------------------------

def _dry_run(capsys, out: Path, *argv: str) -> tuple[str, dict]:
    """Run the dry run with a live KFP server as --host; fail if it was contacted. (stdout, rendered files)."""
    with kfp_api() as (url, recorded):
        rc, stdout, err = pipeline(capsys, "submit", "--dry-run", "--host", url, "--output-dir", str(out), *argv)
    assert rc == 0, err
    assert recorded == [], "the dry run contacted the KFP server"
    files = {p.name: list(yaml.safe_load_all(p.read_text())) for p in out.glob("*.yaml")}
    return stdout, files


def _pods(files: dict) -> dict[str, dict]:
    return {p["metadata"]["labels"]["amopo.dev/step"]: p for p in files["steps.yaml"]}


@needs_crds
def test_the_gpu_dry_run_renders_and_validates_every_object_of_the_run(capsys, tmp_path):
    from pipelines.values import load_values

    values = load_values(GPU_VALUES)
    p, image = values.parameters, values.parameters["image"]
    stdout, files = _dry_run(capsys, tmp_path / "out", "--values", str(GPU_VALUES), "--crd-dir", str(CRDS))
    assert "every object validates" in stdout and "nothing was contacted" in stdout
    assert "validated TrainJob against" in stdout and "validated InferenceService against" in stdout
    assert set(files) == {"pipeline.yaml", "run.yaml", "steps.yaml", "trainjob.yaml", "inferenceservice.yaml"}
    assert files["pipeline.yaml"][0]["root"]["inputDefinitions"]["parameters"]["image"]["defaultValue"] == image
    (run,) = files["run.yaml"]
    assert (run["namespace"], run["service_account"], run["arguments"]) == ("amopo", "amopo-pipeline", p)

    pods = _pods(files)
    assert len(pods) == 15
    for name, pod in pods.items():
        assert pod["metadata"]["namespace"] == "amopo", name
        assert pod["spec"]["serviceAccountName"] == "amopo-pipeline", name
        assert pod["spec"]["containers"][0]["image"] == image, name
    for step, prefix in SIZED_STEPS.items():
        resources = pods[step]["spec"]["containers"][0]["resources"]
        assert resources["requests"] == {"cpu": p[f"{prefix}_cpu"], "memory": p[f"{prefix}_memory"]}, step
        assert resources["limits"].get("memory") == p[f"{prefix}_memory"], step
        assert resources["limits"].get("nvidia.com/gpu") == (p[f"{prefix}_gpus"] or None), step
        assert pods[step]["spec"]["tolerations"] == p["tolerations"], step
    (mount,) = pods["train-model"]["spec"]["volumes"]
    assert mount["persistentVolumeClaim"]["claimName"] == "amopo-workspace"

    (job,) = files["trainjob.yaml"]
    trainer = job["spec"]["trainer"]
    assert job["metadata"]["namespace"] == "amopo" and trainer["image"] == image
    assert trainer["numNodes"] == p["num_nodes"] and trainer["numProcPerNode"] == p["gpus_per_node"]
    assert trainer["resourcesPerNode"]["requests"] == {"cpu": p["trainjob_cpu"], "memory": p["trainjob_memory"]}
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == str(p["gpus_per_node"])
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == p["queue_name"]
    job_pod = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
        "template"]["spec"]["template"]["spec"]
    assert job_pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "amopo-workspace"

    (isvc,) = files["inferenceservice.yaml"]
    predictor = isvc["spec"]["predictor"]
    assert isvc["metadata"]["namespace"] == "amopo" and predictor["serviceAccountName"] == "amopo-serving"
    assert predictor["model"]["modelFormat"]["name"] == "huggingface"
    assert predictor["model"]["resources"]["requests"] == {"cpu": p["serving_cpu"], "memory": p["serving_memory"]}
    assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == str(p["serving_gpus"])
    assert predictor["model"]["storageUri"] == "<register-model.storage_uri at run time>"


def test_the_dev_dry_run_serves_the_project_image_on_cpu_without_shared_schemas(capsys, tmp_path):
    from pipelines.values import load_values

    image = load_values(DEV_VALUES).parameters["image"]
    stdout, files = _dry_run(capsys, tmp_path / "out", "--values", str(DEV_VALUES))
    assert "validated 15 step pods against Kubernetes" in stdout and "validated TrainJob" not in stdout
    (isvc,) = files["inferenceservice.yaml"]
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert container["image"] == image and container["command"] == ["amopo", "serve"]
    (job,) = files["trainjob.yaml"]
    assert job["spec"]["trainer"]["image"] == image and job["spec"]["trainer"]["numProcPerNode"] == 2
    rendered = json.dumps([files["steps.yaml"], job, isvc])
    assert "nvidia.com/gpu" not in rendered


def test_a_dry_run_of_the_laptop_defaults_creates_no_cluster_objects(capsys, tmp_path):
    stdout, files = _dry_run(capsys, tmp_path / "out")
    assert set(files) == {"pipeline.yaml", "run.yaml", "steps.yaml"}
    assert "no TrainJob: launcher is 'local'" in stdout and "no InferenceService: deploy_target is 'local'" in stdout
    assert all("serviceAccountName" not in p["spec"] for p in files["steps.yaml"])  # KFP's default account


def test_a_dry_run_names_what_the_cluster_would_refuse(capsys, tmp_path):
    out = tmp_path / "out"
    rc, _, err = pipeline(capsys, "submit", "--dry-run", "--output-dir", str(out), "--param",
                          "node_selector={pool: 1}")
    assert rc == 2 and "do not validate" in err and "spec.nodeSelector.pool" in err, err
    # the objects are written for a look at what would be refused
    assert "pool: 1" in (out / "steps.yaml").read_text()


def test_a_dry_run_that_cannot_finish_leaves_the_previous_output_alone(capsys, tmp_path):
    out = tmp_path / "out"
    _dry_run(capsys, out)
    before = {p.name: p.read_text() for p in out.iterdir()}
    rc, _, err = pipeline(capsys, "submit", "--dry-run", "--output-dir", str(out), "--crd-dir",
                          str(tmp_path / "nowhere"))
    assert rc == 2 and "--crd-dir" in err and "no such folder" in err
    rc, _, err = pipeline(capsys, "submit", "--dry-run", "--output-dir", str(out), "--package",
                          str(_write(tmp_path / "p.yaml", "a: 1\n")))
    assert rc == 2 and "not a compiled KFP pipeline" in err, err
    assert {p.name: p.read_text() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --- the dry run and the steps cannot disagree ----------------------------------------------------

class _Stop(Exception):
    """Raised by a stand-in for the cluster call, once it has recorded its arguments."""


def _step_inputs(out: Path, values: dict, task: str, component) -> dict:
    """The inputs the compiled pipeline gives ``component`` as ``task`` for a run of ``values``, limited
    to the component's own parameters."""
    from pipelines.compiled_tasks import container_tasks, load_compiled

    spec, _ = load_compiled(out / "pipeline.yaml")
    (found,) = [t for t in container_tasks(spec, values) if t.name == task]
    names = inspect.signature(component.python_func).parameters
    return {k: v for k, v in found.inputs.items() if k in names}


def _artifact(cls, root: Path, name: str):
    return cls(name=name, uri=str(root / name), metadata={})


def test_the_dry_run_trainjob_is_the_one_the_train_step_creates(capsys, tmp_path, monkeypatch):
    import amopo.cluster.launch_training as launch_training
    from components.train import train_model
    from kfp import dsl
    from pipelines.dry_run import DRY_RUN_JOB_NAME
    from pipelines.values import load_values

    values = load_values(GPU_VALUES).parameters
    _, files = _dry_run(capsys, tmp_path / "out", "--values", str(GPU_VALUES))
    seen = {}

    def recording(options, **kwargs):
        seen.update(kwargs)
        raise _Stop()

    monkeypatch.setattr(launch_training, "train_on_cluster", recording)
    inputs = _step_inputs(tmp_path / "out", values, "train-model", train_model)
    inputs.update(objective="amopo", beta=0.8, learning_rate=1e-4, train_options={},   # the loop item's
                  dataset=_artifact(dsl.Dataset, tmp_path, "data"), model=_artifact(dsl.Model, tmp_path, "m"),
                  metrics=_artifact(dsl.Metrics, tmp_path, "x"), curves=_artifact(dsl.HTML, tmp_path, "c"))
    with pytest.raises(_Stop):
        train_model.python_func(**inputs)
    workspace = seen.pop("workspace")
    made = launch_training.step_trainjob(
        DRY_RUN_JOB_NAME, launch_training.staged_config_file(workspace, DRY_RUN_JOB_NAME), workspace=workspace,
        **seen)
    assert files["trainjob.yaml"] == [json.loads(json.dumps(made))]


def test_the_dry_run_inferenceservice_is_the_one_the_deploy_step_creates(capsys, tmp_path, monkeypatch):
    import amopo.cluster.inferenceservice as inferenceservice
    from components.deploy import deploy_model
    from pipelines.values import load_values

    values = load_values(DEV_VALUES).parameters
    _, files = _dry_run(capsys, tmp_path / "out", "--values", str(DEV_VALUES))
    seen = {}

    def recording(manifest, **kwargs):
        seen["manifest"] = manifest
        return {"address_url": "http://amopo.amopo.svc", "url": ""}

    monkeypatch.setattr(inferenceservice, "deploy_inferenceservice", recording)
    inputs = _step_inputs(tmp_path / "out", values, "deploy-model", deploy_model)
    assert deploy_model.python_func(**inputs) == ("http://amopo.amopo.svc", values.get("registered_model_name",
                                                                                       "amopo"))
    assert files["inferenceservice.yaml"] == [json.loads(json.dumps(seen["manifest"]))]


# --- the documents name only what exists -------------------------------------------------------

DOCS = [ROOT / "README.md", ROOT / "k8s" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_documents_name_only_real_parameters_flags_and_files():
    import re

    from pipelines.cli import _parser
    from pipelines.params import pipeline_parameters

    known = set(pipeline_parameters())
    submit_flags = {a for action in _parser()._subparsers._group_actions[0].choices["submit"]._actions
                    for a in action.option_strings}
    compile_flags = {a for action in _parser()._subparsers._group_actions[0].choices["compile"]._actions
                     for a in action.option_strings}
    for doc in DOCS:
        text = doc.read_text()
        for name in re.findall(r"--param '?([a-z_]+)=", text):
            assert name in known, f"{doc.name}: --param {name} is not a pipeline parameter"
        for table in re.findall(r"^\| parameters? \|.*?(?:\n\n|\Z)", text, flags=re.M | re.S):
            for row in (r for r in table.splitlines()[2:] if r.startswith("|")):
                for name in re.findall(r"`([a-z_]+)`", row.split("|")[1]):
                    assert name in known, f"{doc.name}: parameter table names {name}, which the pipeline lacks"
        for line in re.findall(r"amopo pipeline (submit|compile)\b([^\n`]*)", text):
            flags = submit_flags if line[0] == "submit" else compile_flags
            for flag in re.findall(r"(--[a-z][a-z-]*)", line[1]):
                assert flag in flags, f"{doc.name}: `amopo pipeline {line[0]}` has no {flag}"
        for path in re.findall(r"`(k8s/[\w./-]+)`", text):
            assert (ROOT / path).exists(), f"{doc.name}: {path} does not exist"
        for gone in ("AMOPO_IMAGE", "amopo-config", "envFrom", "AMOPO_WORKSPACE"):
            assert gone not in text, f"{doc.name} names {gone}, which nothing reads"
