"""The train step's cluster path (amopo.cluster.launch_training.train_on_cluster) against kmock, a real
HTTP Kubernetes API emulator.

No Trainer controller and no nodes exist here, so the test plays both: it reads the TrainJob the
step created, runs the very `amopo train --config FILE` its pods would run (in this process, on the
staged files, with MLflow pointed at a local sqlite store instead of the server the pods would reach),
then marks the TrainJob Complete through the API. The step must then hand back the trained model.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from amopo.cluster import ClusterError
from amopo.cluster.launch_training import SECRET_ENV, train_on_cluster
from amopo.cluster.trainjob import GROUP, PLURAL, VERSION
from tests.helpers.kube import api_client, stored, until
from tests.helpers.records import arithmetic_pairs, write_jsonl

NS = "amopo"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    from amopo.data.prepare import PrepareConfig, prepare

    root = tmp_path_factory.mktemp("launch-data")
    train_file = write_jsonl(root / "train.jsonl", arithmetic_pairs(6))
    eval_file = write_jsonl(root / "eval.jsonl", arithmetic_pairs(2, offset=50))
    prepare(PrepareConfig(data_source=str(train_file), eval_source=str(eval_file), output=str(root / "data")))
    return root / "data"


def _options(prepared: Path, model: Path, output: Path, **kw) -> dict:
    return {"data": str(prepared), "base_model": str(model), "output": str(output), "max_steps": 2, "learning_rate": 1e-3,
            "batch_size": 2, "max_length": 128, "progress": False, "eval_heldout": False, "warmup_ratio": 0.0,
            "save_every": 1, "mlflow_tracking_uri": "http://amopo-mlflow.amopo:5000", **kw}


def _stored(kmock, name: str):
    return stored(kmock, PLURAL, NS, name)


async def _finish(kmock, name: str, kind: str, reason: str, message: str = "") -> None:
    url = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}/{name}/status"
    body = {"status": {"conditions": [{"type": kind, "status": "True", "reason": reason, "message": message,
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}
    async with kmock.patch(url, json=body, headers={"Content-Type": "application/merge-patch+json"}) as resp:
        assert resp.status == 200, await resp.text()


def _launch(kmock, options: dict, workspace: Path, name: str, **kw) -> asyncio.Task:
    def call():
        try:
            return train_on_cluster(options, workspace=str(workspace), image="registry.example/amopo:1",
                                    namespace=NS, workspace_pvc="amopo-workspace", num_nodes=2, job_name=name,
                                    api_client=api_client(kmock), poll_s=0.05, timeout_s=120, log=lambda s: None, **kw)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            return exc

    return asyncio.create_task(asyncio.to_thread(call))


@pytest.mark.asyncio
async def test_the_step_stages_inputs_runs_the_trainjob_and_returns_the_model(kmock, prepared, tiny_model_dir,
                                                                              tmp_path):
    from amopo import config as config_lib
    from amopo.train.config import TrainConfig
    from amopo.train.loop import train

    name, workspace, output = "amopo-train-ok", tmp_path / "workspace", tmp_path / "step-output"
    task = _launch(kmock, _options(prepared, tiny_model_dir, output), workspace, name, runtime="amopo-torch",
                   queue_name="team-a")
    await until(lambda: _stored(kmock, name) is not None)
    job = _stored(kmock, name)
    assert job["spec"]["runtimeRef"]["name"] == "amopo-torch"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    trainer = job["spec"]["trainer"]
    assert trainer["numNodes"] == 2 and trainer["image"] == "registry.example/amopo:1"
    assert trainer["command"] == ["torchrun", "--module", "amopo", "train"]
    env = {e["name"]: e for e in trainer["env"]}
    assert env["OMP_NUM_THREADS"]["value"] == "1"
    for var, ref in SECRET_ENV.items():
        secret, key = ref.split("/")
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": key, "optional": True}
    pod = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
        "template"]["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "amopo-workspace"
    assert pod["containers"][0]["volumeMounts"][0]["mountPath"] == str(workspace)

    # What every node would run: the staged config, whose paths all lie on the workspace volume.
    assert trainer["args"][0] == "--config"
    config_file = Path(trainer["args"][1])
    staged = yaml.safe_load(config_file.read_text())
    run_dir = workspace / "runs" / name
    assert config_file.parent == run_dir
    assert staged["data"] == str(run_dir / "data") and (run_dir / "data" / "prepare.json").is_file()
    assert staged["base_model"] == str(run_dir / "base") and (run_dir / "base" / "config.json").is_file()
    assert staged["output"] == str(run_dir / "train")
    assert staged["mlflow_tracking_uri"] == "http://amopo-mlflow.amopo:5000"
    assert not output.exists()  # nothing is handed back before the job ends

    # The test plays the nodes (one process, MLflow local) and then the controller.
    cfg = config_lib.resolve(TrainConfig, config_file, {"mlflow_tracking_uri": f"sqlite:///{tmp_path / 'ml.db'}"})
    await asyncio.to_thread(train, cfg)
    assert (run_dir / "train" / "checkpoints").is_dir()
    await _finish(kmock, name, "Complete", "JobsCompleted")
    summary = await task
    assert not isinstance(summary, BaseException), summary
    assert summary["steps"] == 2
    assert (output / "model" / "model.safetensors").is_file() and (output / "metrics.json").is_file()
    assert not (output / "checkpoints").exists()  # resumable state stays on the workspace


@pytest.mark.asyncio
async def test_a_failed_trainjob_fails_the_step_and_hands_back_nothing(kmock, prepared, tiny_model_dir, tmp_path):
    name, output = "amopo-train-bad", tmp_path / "step-output"
    task = _launch(kmock, _options(prepared, tiny_model_dir, output), tmp_path / "ws", name)
    await until(lambda: _stored(kmock, name) is not None)
    await _finish(kmock, name, "Failed", "FailedJobs", "node-0 exited with code 1")
    result = await task
    assert isinstance(result, ClusterError) and "FailedJobs: node-0 exited with code 1" in str(result), result
    assert not output.exists()


@pytest.mark.asyncio
async def test_a_completed_job_without_output_is_named(kmock, prepared, tiny_model_dir, tmp_path):
    name = "amopo-train-empty"
    task = _launch(kmock, _options(prepared, "embedded:smollm2-135m-instruct", tmp_path / "out"), tmp_path / "ws",
                   name)
    await until(lambda: _stored(kmock, name) is not None)
    staged = yaml.safe_load(Path(_stored(kmock, name)["spec"]["trainer"]["args"][1]).read_text())
    assert staged["base_model"] == "embedded:smollm2-135m-instruct"  # every pod resolves it itself
    await _finish(kmock, name, "Complete", "JobsCompleted")
    result = await task
    assert isinstance(result, ClusterError) and "wrote no" in str(result) and "metrics.json" in str(result)


@pytest.mark.parametrize("overrides, step, words", [
    ({"mlflow_tracking_uri": None}, {}, "needs mlflow_tracking_uri"),
    ({"mlflow_tracking_uri": "sqlite:///runs/mlflow.db"}, {}, "needs mlflow_tracking_uri"),
    ({"batch_size": 0}, {}, "batch_size"),
    ({"no_such_option": 1}, {}, "no_such_option"),
    ({}, {"distributed": "deepspeed"}, "distributed 'deepspeed' is not supported: DeepSpeed is not part"),
    ({"fsdp_config": "configs/accelerate/fsdp.yaml"}, {"distributed": "fsdp"},
     "a TrainJob takes it from the train step's fsdp_config parameter"),
])
def test_bad_options_fail_before_anything_is_copied_or_created(prepared, tiny_model_dir, tmp_path, overrides, step,
                                                               words):
    options = {**_options(prepared, tiny_model_dir, tmp_path / "out"), **overrides}
    with pytest.raises(Exception, match=words) as info:
        train_on_cluster(options, workspace=str(tmp_path / "ws"), image="img", namespace=NS,
                         workspace_pvc="amopo-workspace", api_client=object(), **step)
    assert "Traceback" not in str(info.value)
    assert not (tmp_path / "ws").exists() and not (tmp_path / "out").exists()


def test_an_accelerator_type_becomes_the_gpu_product_node_label():
    from amopo.cluster.pod_parts import with_accelerator

    zone = {"topology.kubernetes.io/zone": "a"}
    assert with_accelerator(zone, "NVIDIA-H100-80GB-HBM3") == {**zone, "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert with_accelerator(zone, "") == zone and with_accelerator(None, "") == {}
