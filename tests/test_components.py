"""Every KFP component on its own: as a plain function (``component.python_func`` with real artifact
objects on local paths, chained prepare → train → evaluate → gate → register → deploy → smoke test
→ promote → clean up on a tiny model), and through KFP's local runner (``SubprocessRunner``, each
component in a subprocess of this environment, as on a cluster in the image). The whole DAG through
the local runner is tests/test_pipeline.py."""


import asyncio
import json
import urllib.request
from pathlib import Path

import pytest
from kfp import dsl

from amopo.errors import AmopoError
from components.cleanup import clean_up
from components.deploy import deploy_model
from components.evaluate import evaluate_model
from components.gate import gate_model
from components.prepare import prepare_data
from components.promote import promote_model
from components.register import register_model
from components.smoke_test import smoke_test_endpoint
from components.train import train_model
from tests.helpers.records import arithmetic_pairs, write_jsonl


def _artifact(cls, root: Path, name: str):
    return cls(name=name, uri=str(root / name), metadata={})


def _train_kwargs(dataset, tiny_model_dir: Path, root: Path, **kw) -> dict:
    return dict(dataset=dataset, base_model=str(tiny_model_dir), objective="amopo", beta=0.8, gamma=2.0,
                learning_rate=1e-3, max_steps=2, batch_size=2, gradient_accumulation_steps=1, max_length=128, heldout_max_pairs=4,
                train_options={"warmup_ratio": 0.0, "progress": False}, mlflow_tracking_uri=f"sqlite:///{root}/ml.db",
                mlflow_experiment="components", launcher="local", num_processes=1, num_nodes=1, gpus_per_node=0,
                accelerator_type="", fsdp_config="", image="img", namespace="amopo", workspace_pvc="ws", node_selector={},
                tolerations=[], timeout_minutes=10, training_runtime="torch-distributed", queue_name="",
                cpu_per_node="4", memory_per_node="16Gi", model=_artifact(dsl.Model, root, "model"),
                metrics=_artifact(dsl.Metrics, root, "train-metrics"), curves=_artifact(dsl.HTML, root, "curves"),
                **kw)


@pytest.fixture(scope="module")
def chain(tmp_path_factory, tiny_model_dir):
    """prepare → train → evaluate, called as plain functions; the artifacts they wrote."""
    root = tmp_path_factory.mktemp("components")
    train_file = write_jsonl(root / "train.jsonl", arithmetic_pairs(8))
    eval_file = write_jsonl(root / "eval.jsonl", arithmetic_pairs(4, offset=50))
    dataset = _artifact(dsl.Dataset, root, "dataset")
    pairs = prepare_data.python_func(data_source=str(train_file), data_format="amopo", eval_source=str(eval_file),
                                     dimensions="", base_model=str(tiny_model_dir), max_length=128, prepare_options={},
                                     dataset=dataset)
    kwargs = _train_kwargs(dataset, tiny_model_dir, root)
    run_id = train_model.python_func(**kwargs)
    results, eval_metrics = _artifact(dsl.Artifact, root, "results"), _artifact(dsl.Metrics, root, "eval-metrics")
    report = _artifact(dsl.HTML, root, "report")
    accuracy = evaluate_model.python_func(
        model=kwargs["model"], dataset=dataset, judge=str(tiny_model_dir), judge_model_name="", dimensions="",
        num_instructions=2, max_new_tokens=4, lm_eval_tasks="", lm_eval_limit=2, heldout_max_pairs=4,
        eval_options={"judge_top_k": 10000, "lc_bootstrap": 10, "progress": False},
        mlflow_tracking_uri=kwargs["mlflow_tracking_uri"], results=results, metrics=eval_metrics, report=report)
    return {"root": root, "pairs": pairs, "dataset": dataset, "run_id": run_id, "train": kwargs,
            "results": results, "eval_metrics": eval_metrics, "report": report, "accuracy": accuracy,
            "tracking_uri": kwargs["mlflow_tracking_uri"]}


def test_prepare_returns_the_pair_count_and_describes_the_dataset(chain):
    assert chain["pairs"] == 8
    meta = chain["dataset"].metadata
    assert meta["train_pairs"] == 8 and meta["eval_pairs"] == 4 and meta["format"] == "amopo"
    assert meta["dimensions"] == ["overall", "helpfulness", "correctness", "instruction_following"]
    assert (Path(chain["dataset"].path) / "prepare.json").is_file()


def test_prepare_refuses_bad_records_naming_file_and_line(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(arithmetic_pairs(1)[0]) + "\n" + '{"prompt": "x", "chosen": {}}\n')
    dataset = _artifact(dsl.Dataset, tmp_path, "dataset")
    with pytest.raises(AmopoError, match=r"bad.jsonl:2"):
        prepare_data.python_func(data_source=str(bad), data_format="amopo", eval_source="", dimensions="",
                                 base_model=str(tiny_model_dir), max_length=128, prepare_options={}, dataset=dataset)
    assert not Path(dataset.path).exists()


def test_train_writes_the_model_metrics_and_curves_without_checkpoints(chain):
    model, metrics = chain["train"]["model"], chain["train"]["metrics"]
    assert chain["run_id"] and len(chain["run_id"]) == 32
    assert (Path(model.path) / "model" / "model.safetensors").is_file()
    assert not (Path(model.path) / "checkpoints").exists()
    assert model.metadata["objective"] == "amopo" and model.metadata["steps"] == 2
    assert 0.0 <= metrics.metadata["heldout_final/accuracy/mean_dimensions"] <= 1.0
    assert "heldout_base/accuracy/mean_dimensions" in metrics.metadata
    html = Path(chain["train"]["curves"].path).read_text()
    assert "<img" in html and "held-out accuracy (final)" in html


def test_train_refuses_an_unknown_launcher_and_bad_options(chain, tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="launcher must be 'local' or 'trainjob', got 'slurm'"):
        train_model.python_func(**{**_train_kwargs(chain["dataset"], tiny_model_dir, tmp_path), "launcher": "slurm"})
    with pytest.raises(AmopoError, match="no_such_option"):
        train_model.python_func(**{**_train_kwargs(chain["dataset"], tiny_model_dir, tmp_path),
                                   "train_options": {"no_such_option": 1}})
    with pytest.raises(AmopoError, match="needs mlflow_tracking_uri"):
        train_model.python_func(**{**_train_kwargs(chain["dataset"], tiny_model_dir, tmp_path), "launcher": "trainjob"})


def test_a_trainjob_refuses_an_fsdp_config_the_image_does_not_hold(tmp_path):
    kwargs = {**_train_kwargs(_artifact(dsl.Dataset, tmp_path, "dataset"), tmp_path / "base", tmp_path),
              "launcher": "trainjob", "fsdp_config": "my/deepspeed.yaml"}
    with pytest.raises(AmopoError, match="fsdp_config 'my/deepspeed.yaml': a TrainJob shards with the image's "
                                         "configs/accelerate/fsdp.yaml"):
        train_model.python_func(**kwargs)


def test_local_fsdp_hands_the_trainer_the_shipped_fsdp_config(tmp_path, monkeypatch):
    """Only the wiring: the trainer itself is replaced by one that records the config it gets."""
    import amopo.train.launch
    from amopo.train.shipped import shipped_fsdp_config

    received = []
    monkeypatch.setattr(amopo.train.launch, "run_local",
                        lambda cfg, num_processes: received.append((cfg, num_processes)) or {"steps": 0})
    kwargs = {**_train_kwargs(_artifact(dsl.Dataset, tmp_path, "dataset"), tmp_path / "base", tmp_path),
              "fsdp_config": "configs/accelerate/fsdp.yaml", "num_processes": 2}
    monkeypatch.chdir(tmp_path)   # the relative path names the shipped file from any folder
    train_model.python_func(**kwargs)
    ((cfg, num_processes),) = received
    from amopo.train.fsdp import read_fsdp_config
    from amopo.train.shipped import shipped_or_local

    assert cfg.fsdp_config == "configs/accelerate/fsdp.yaml"
    assert shipped_or_local(cfg.fsdp_config) == shipped_fsdp_config() and read_fsdp_config(cfg.fsdp_config)
    assert num_processes == 2


def test_a_negative_beta_trains_dpo_at_its_own_default_of_0_1(prepared, tiny_model_dir, tmp_path):
    """One pipeline β for every objective of a comparison: β < 0 means the objective's default."""
    from amopo import config as config_lib
    from amopo.train.config import TrainConfig

    kwargs = {**_train_kwargs(_artifact(dsl.Dataset, prepared.parent, prepared.name), tiny_model_dir, tmp_path),
              "objective": "dpo", "beta": -1.0, "max_steps": 1}
    train_model.python_func(**kwargs)
    resolved = config_lib.resolve(TrainConfig, Path(kwargs["model"].path) / "train_config.yaml")
    assert (resolved.objective, resolved.beta, resolved.effective_beta) == ("dpo", None, 0.1)


def test_an_explicit_beta_is_kept_for_any_objective(tmp_path, monkeypatch):
    """Only the wiring: the trainer itself is replaced by one that records the config it gets."""
    import amopo.train.launch

    received = []
    monkeypatch.setattr(amopo.train.launch, "run_local", lambda cfg, num_processes: received.append(cfg) or {})
    for objective, beta in (("dpo", 0.3), ("amopo", -1.0), ("simpo", 2.0)):
        train_model.python_func(**{**_train_kwargs(_artifact(dsl.Dataset, tmp_path, "dataset"), tmp_path / "base",
                                                   tmp_path), "objective": objective, "beta": beta})
    assert [(c.beta, c.effective_beta) for c in received] == [(0.3, 0.3), (None, 0.8), (2.0, 2.0)]


def test_evaluate_writes_flat_metrics_a_report_and_logs_them(chain):
    flat = json.loads((Path(chain["results"].path) / "metrics.json").read_text())
    assert flat["pref_accuracy/pairs"] == 4
    assert chain["accuracy"] == pytest.approx(flat["pref_accuracy/mean_dimensions"])
    assert chain["eval_metrics"].metadata["pref_accuracy/pairs"] == 4.0
    html = Path(chain["report"].path).read_text()
    assert "Evaluation" in html and chain["run_id"] in html


def _gate(tmp_path: Path, metrics: dict, **kw) -> tuple[bool, str]:
    (tmp_path / "results").mkdir(exist_ok=True)
    (tmp_path / "results" / "metrics.json").write_text(json.dumps(metrics))
    decision = _artifact(dsl.Markdown, tmp_path, "decision")
    args = dict(gate_metric="pref_accuracy/mean_dimensions", min_improvement=0.0, thresholds="", against_base=True)
    passed = gate_model.python_func(results=_artifact(dsl.Artifact, tmp_path, "results"), decision=decision,
                                    **{**args, **kw})
    return passed, Path(decision.path).read_text()


def test_gate_needs_the_thresholds_and_a_win_over_the_base_model(tmp_path):
    better = {"pref_accuracy/mean_dimensions": 0.6, "pref_base_accuracy/mean_dimensions": 0.5, "winrate/lc": 0.55}
    passed, text = _gate(tmp_path, better, thresholds="winrate/lc>=0.5")
    assert passed is True and text.startswith("**gate: passed**") and "winrate/lc>=0.5 holds" in text
    passed, text = _gate(tmp_path, {**better, "pref_accuracy/mean_dimensions": 0.5})
    assert passed is False and text.startswith("**gate: rejected**") and "does not beat" in text
    passed, text = _gate(tmp_path, {"pref_accuracy/mean_dimensions": 0.9})
    assert passed is False and "no base-model measurement" in text
    passed, _ = _gate(tmp_path, {"pref_accuracy/mean_dimensions": 0.9}, against_base=False)
    assert passed is True
    passed, text = _gate(tmp_path, better, thresholds="winrate/lc>=0.6")
    assert passed is False and "winrate/lc>=0.6 fails" in text


def test_register_deploy_smoke_test_promote_and_clean_up(chain):
    root, uri = chain["root"], chain["tracking_uri"]
    version, model_uri, storage_uri = register_model.python_func(
        model=chain["train"]["model"], results=chain["results"], registered_name="comp", mlflow_tracking_uri=uri)
    assert (version, model_uri) == (1, "models:/comp/1") and storage_uri.endswith("/model")
    state_dir, run_id = root / "serving", "run-1"
    url, served_name = deploy_model.python_func(
        model_uri=model_uri, storage_uri=storage_uri, target="local", service_name="comp", mlflow_tracking_uri=uri,
        namespace="amopo", runtime="huggingface", image="", gpus=0, cpu="2", memory="8Gi", accelerator_type="", node_selector={},
        tolerations=[], canary_traffic_percent=100, service_account="", state_dir=str(state_dir), run_id=run_id, timeout_minutes=5,
        queue_name="")
    try:
        assert url.startswith("http://127.0.0.1:") and served_name == "comp"
        smoke = _artifact(dsl.Markdown, root, "smoke")
        reply = smoke_test_endpoint.python_func(url=url, model_name=served_name, prompt="Hello?", result=smoke,
                                                model=chain["train"]["model"])
        assert reply and "smoke test passed" in Path(smoke.path).read_text()
        # the chain's model was trained on quality pairs only: no steering to measure
        assert "the model was trained to steer no dimension" in Path(smoke.path).read_text()
        decision = _artifact(dsl.Markdown, root, "promotion")
        promoted, champion = promote_model.python_func(
            registered_name="comp", version=version, gate_metric="pref_accuracy/mean_dimensions", min_improvement=0.0,
            thresholds="pref_accuracy/pairs>=4", mlflow_tracking_uri=uri, decision=decision)
        assert (promoted, champion) == (True, 1) and "promoted to champion" in Path(decision.path).read_text()
    finally:
        status = dsl.PipelineTaskFinalStatus(state="SUCCEEDED", pipeline_job_resource_name="run-1",
                                             pipeline_task_name="clean-up", error_code=None, error_message=None)
        final = clean_up.python_func(status=status, target="local", state_dir=str(state_dir), run_id=run_id,
                                     keep_serving=False)
    assert final == "SUCCEEDED" and not (state_dir / f"{run_id}.json").exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/v2/health/live", timeout=3)


def test_deploy_and_smoke_test_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="target must be 'local' or 'kserve', got 'nomad'"):
        deploy_model.python_func(model_uri="m", storage_uri="s", target="nomad", service_name="x",
                                 mlflow_tracking_uri="", namespace="n", runtime="huggingface", image="", gpus=0,
                                 cpu="2", memory="8Gi", accelerator_type="", node_selector={}, tolerations=[], canary_traffic_percent=100, service_account="", state_dir=str(tmp_path), run_id="r",
                                 timeout_minutes=1, queue_name="")
    with pytest.raises(AmopoError, match="unreachable after 1 tries"):
        from amopo.serving.smoke import smoke_test

        smoke_test("http://127.0.0.1:9", "x", attempts=1, timeout_s=2)


# --- through KFP's local runner ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_runner(tmp_path_factory):
    from kfp import local

    root = tmp_path_factory.mktemp("local-runner")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    return root


@pytest.mark.slow
def test_prepare_runs_in_the_local_runner(local_runner, tiny_model_dir, tmp_path):
    train_file = write_jsonl(tmp_path / "train.jsonl", arithmetic_pairs(6))
    prepared = prepare_data(data_source=str(train_file), data_format="amopo", eval_source="", dimensions="",
                            base_model=str(tiny_model_dir), max_length=128, prepare_options={})
    dataset = prepared.outputs["dataset"]
    assert prepared.outputs["Output"] == dataset.metadata["train_pairs"] == 6
    assert (Path(dataset.path) / "prepare.json").is_file()


@dsl.pipeline(name="gate-on-imported-results")
def _gate_pipeline(results_uri: str, thresholds: str) -> bool:
    """The gate on an evaluation folder brought in by an importer (single components take no input
    artifacts in the local runner)."""
    results = dsl.importer(artifact_uri=results_uri, artifact_class=dsl.Artifact, reimport=True)
    return gate_model(results=results.output, gate_metric="pref_accuracy/mean_dimensions", min_improvement=0.05,
                      thresholds=thresholds, against_base=True).outputs["Output"]


@pytest.mark.slow
def test_gate_runs_in_the_local_runner(local_runner, tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "metrics.json").write_text(json.dumps({"pref_accuracy/mean_dimensions": 0.7,
                                                                  "pref_base_accuracy/mean_dimensions": 0.6}))
    assert _gate_pipeline(results_uri=str(tmp_path / "results"), thresholds="").output is True
    assert _gate_pipeline(results_uri=str(tmp_path / "results"), thresholds="winrate/lc>=0.5").output is False


@pytest.mark.slow
def test_a_failing_component_fails_its_local_run_with_the_reason(local_runner):
    with pytest.raises(RuntimeError, match="smoke-test-endpoint"):
        smoke_test_endpoint(url="http://127.0.0.1:9", model_name="x", prompt="hi")


# --- the cluster path of deploy, against kmock (a real HTTP Kubernetes API emulator) -----------------

@pytest.mark.asyncio
async def test_deploy_to_kserve_creates_the_inferenceservice_and_returns_its_cluster_address(kmock, tmp_path,
                                                                                           monkeypatch):
    """The component finds the "cluster" through a kubeconfig, as outside a pod; the test plays the
    KServe controller by writing a Ready status through the API."""
    from amopo.cluster.inferenceservice import GROUP, PLURAL, VERSION
    from tests.helpers.kube import stored, until

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": str(kmock.url)}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    storage = "s3://amopo-mlflow/artifacts/1/models/m-abc/artifacts/model"

    def deploy():
        try:
            return deploy_model.python_func(
                model_uri="models:/amopo/3", storage_uri=storage, target="kserve", service_name="amopo",
                mlflow_tracking_uri="", namespace="serving", runtime="huggingface", image="", gpus=1, cpu="6",
                memory="40Gi", accelerator_type="NVIDIA-H100-80GB-HBM3", node_selector={"pool": "serve"},
                tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                canary_traffic_percent=100, service_account="amopo-serving", state_dir=str(tmp_path), run_id="r",
                timeout_minutes=1, queue_name="team-a")
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            return exc

    task = asyncio.create_task(asyncio.to_thread(deploy))
    await until(lambda: stored(kmock, PLURAL, "serving", "amopo") is not None)
    predictor = stored(kmock, PLURAL, "serving", "amopo")["spec"]["predictor"]
    assert stored(kmock, PLURAL, "serving", "amopo")["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert predictor["model"]["storageUri"] == storage and predictor["model"]["modelFormat"]["name"] == "huggingface"
    assert predictor["model"]["resources"]["limits"] == {"nvidia.com/gpu": "1", "memory": "40Gi"}
    assert predictor["model"]["resources"]["requests"] == {"cpu": "6", "memory": "40Gi"}
    assert predictor["nodeSelector"] == {"pool": "serve", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert predictor["tolerations"][0]["key"] == "nvidia.com/gpu" and "canaryTrafficPercent" not in predictor
    url = f"/apis/{GROUP}/{VERSION}/namespaces/serving/{PLURAL}/amopo/status"
    body = {"status": {"observedGeneration": 1, "url": "http://amopo.serving.example.com",
                       "address": {"url": "http://amopo-predictor.serving.svc.cluster.local"},
                       "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}
    async with kmock.patch(url, json=body, headers={"Content-Type": "application/merge-patch+json"}) as resp:
        assert resp.status == 200, await resp.text()
    result = await task
    assert not isinstance(result, BaseException), result
    assert tuple(result) == ("http://amopo-predictor.serving.svc.cluster.local", "amopo")
