"""The image, built for real and run: every step of the pipeline, the TrainJob's command, the custom
InferenceService's command and the MLflow server's command, inside the image as its non-root USER with
its filesystem read-only apart from /workspace and /tmp (tests/helpers/image.py says how).

The image is built once per session with scripts/build_image.sh's code (buildah here; the first build
takes several minutes, later ones reuse the dependency layers). Every command run here is taken from
what the project renders — the kustomize output of k8s/base, the TrainJob and InferenceService
manifests the pipeline's steps create, the compiled pipeline's executors — never from a copy, so a
path, permission or entry-point error in the image fails these tests.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from helpers.image import ImageRunner, image_tools_missing
from helpers.processes import free_port
from helpers.records import arithmetic_pairs, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

if (why := image_tools_missing()) is not None:
    pytest.skip(why, allow_module_level=True)


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 240) -> bytes:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}) before answering {url}:\n"
                                 f"{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read()
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} did not answer within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def post_json(url: str, body: dict, timeout_s: float = 120) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def k8s_expand(text: str, env: dict[str, str]) -> str:
    """``$(VAR)`` references expanded as the kubelet does (unknown ones are left as written)."""
    import re

    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), text)


def ok(result: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    errors = "\n".join(line for line in result.stderr.splitlines() if "Error" in line)
    assert result.returncode == 0, f"{what} failed in the image ({result.returncode}):\n" \
                                   f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}\nerror lines:\n{errors[-3000:]}"
    return result


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model_dir) -> Path:
    """The pod's volume: a tiny model and arithmetic preference data, writable by the image's uid."""
    import shutil

    ws = tmp_path_factory.mktemp("image-workspace")
    ws.chmod(0o777)
    shutil.copytree(tiny_model_dir, ws / "tiny")
    subprocess.run(["chmod", "-R", "a+rX", str(ws / "tiny")], check=True)   # pytest's folders are 0700
    write_jsonl(ws / "train.jsonl", arithmetic_pairs(8))
    write_jsonl(ws / "eval.jsonl", arithmetic_pairs(4, offset=50))
    return ws


@pytest.fixture(scope="module")
def runner(image, workspace):
    r = ImageRunner(image, workspace)
    yield r
    r.close()


def test_runs_as_its_non_root_user_on_a_read_only_filesystem(runner):
    assert runner.user == "1000:1000" and runner.entrypoint == ["amopo"]
    assert {"usr", "opt", "home", "var"} <= set(runner.read_only_dirs())
    probe = ("import os, pathlib\n"
             "print(os.getuid(), os.getgid())\n"
             "for p in ('/opt/amopo/x', '/home/amopo/x', '/usr/x', '/var/tmp/x', '/etc/x', '/workspace/x', '/tmp/x'):\n"
             "    try:\n"
             "        pathlib.Path(p).write_text('x'); print(p, 'writable')\n"
             "    except OSError as e:\n"
             "        print(p, 'refused', e.errno)\n")
    out = ok(runner.run(["python3", "-c", probe]), "the write probe").stdout.splitlines()
    assert out[0] == "1000 1000"
    verdicts = dict(line.split(" ", 1) for line in out[1:])
    assert {p for p, v in verdicts.items() if v == "writable"} == {"/workspace/x", "/tmp/x"}, verdicts


@pytest.fixture(scope="module")
def mlflow_server(runner, workspace, tmp_path_factory):
    """The MLflow Deployment of k8s/base, its container's command run in the image (sqlite store)."""
    rendered = subprocess.run(["kubectl", "kustomize", str(ROOT / "k8s" / "base")], capture_output=True,
                              text=True, check=True).stdout
    (deployment,) = [d for d in yaml.safe_load_all(rendered)
                     if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "amopo-mlflow"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port = free_port()
    # The Secret-backed variables are not set here; the store URI is, to a sqlite file on the volume.
    env = {"MLFLOW_BACKEND_STORE_URI": "sqlite:////workspace/mlflow.db",
           **{e["name"]: e["value"] for e in container["env"] if "value" in e and "$(" not in e["value"]}}
    args = [k8s_expand(a, env) for a in container["args"]]
    assert "--port=5000" in args
    args[args.index("--port=5000")] = f"--port={port}"   # the only change: a free port on this host
    log = tmp_path_factory.mktemp("mlflow-log") / "mlflow.log"
    proc = runner.start([*container["command"], *args], log, env=env)
    try:
        probe = container["readinessProbe"]["httpGet"]["path"]
        wait_http(f"http://127.0.0.1:{port}{probe}", proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        ImageRunner.stop(proc)


def test_mlflow_server_command_answers_its_health_route(mlflow_server):
    with urllib.request.urlopen(f"{mlflow_server}/health", timeout=10) as response:
        assert response.status == 200 and response.read().strip() == b"OK"


@pytest.fixture(scope="module")
def fsdp_trained(runner, workspace, mlflow_server, tmp_path_factory):
    """A TrainJob's command as the train step renders it (FSDP, one CPU node × 2 processes), run in the
    image with the variables Kubeflow Trainer's torch runtime injects, logging to the MLflow server."""
    from amopo.cluster.launch_training import STEP_WORKSPACE, staged_config_file, step_trainjob

    ok(runner.run(["amopo", "prepare", "--data-source", "/workspace/train.jsonl", "--eval-source", "/workspace/eval.jsonl",
                   "--base-model", "/workspace/tiny", "--max-length", "128", "--output", "/workspace/prepared"]),
       "amopo prepare")
    # The server's default artifact root is S3 (clients write there themselves); this experiment's
    # artifacts go to the shared volume instead, as no S3 store runs here.
    post_json(f"{mlflow_server}/api/2.0/mlflow/experiments/create",
              {"name": "image-test", "artifact_location": "/workspace/mlartifacts"})
    job = "amopo-train-image"
    config_file = staged_config_file(STEP_WORKSPACE, job)
    # The train step's staging (copy data and base model to the volume, write the resolved config),
    # run in the image as the step's pod runs it.
    stage = (
        "from amopo import config as c\n"
        "from amopo.train.config import TrainConfig\n"
        "from amopo.cluster.launch_training import stage_inputs\n"
        "from pathlib import Path\n"
        f"cfg = c.from_dict(TrainConfig, dict(data='/workspace/prepared', base_model='/workspace/tiny', objective='amopo',"
        f" max_steps=2, batch_size=2, max_length=128, learning_rate=1e-3, warmup_ratio=0.0, progress=False,"
        f" heldout_max_pairs=4, mlflow_tracking_uri={mlflow_server!r}, mlflow_experiment='image-test',"
        f" output='/workspace/step-output'), 'train')\n"
        f"staged = stage_inputs(c.to_dict(cfg), Path({str(config_file.parent)!r}))\n"
        f"Path({str(config_file)!r}).write_text(c.dump_yaml(c.from_dict(TrainConfig, staged, 'train')))\n")
    ok(runner.run(["python3", "-c", stage]), "staging the TrainJob's inputs")
    manifest = step_trainjob(job, config_file, workspace=STEP_WORKSPACE, image=runner.image, namespace="amopo",
                             workspace_pvc="amopo-workspace", num_nodes=1, gpus_per_node=0, procs_per_node=2,
                             distributed="fsdp")
    trainer = manifest["spec"]["trainer"]
    assert trainer["image"] == runner.image
    assert "--fsdp-config" in trainer["args"] and trainer["numProcPerNode"] == 2
    env = {e["name"]: e["value"] for e in trainer.get("env", []) if "value" in e}
    env.update(PET_NNODES="1", PET_NPROC_PER_NODE=str(trainer["numProcPerNode"]), PET_NODE_RANK="0",
               PET_MASTER_ADDR="127.0.0.1", PET_MASTER_PORT=str(free_port()))
    result = ok(runner.run([*trainer["command"], *trainer["args"]], env=env, timeout=900),
                "the FSDP TrainJob command")
    return workspace / "runs" / job / "train", result


def test_fsdp_trainjob_command_trains_on_two_processes(fsdp_trained, mlflow_server):
    out, result = fsdp_trained
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 2
    assert (out / "model" / "model.safetensors").is_file()
    run_id = metrics["mlflow_run_id"]
    with urllib.request.urlopen(f"{mlflow_server}/api/2.0/mlflow/runs/get?run_id={run_id}", timeout=10) as r:
        assert json.loads(r.read())["run"]["info"]["status"] == "FINISHED"


def test_custom_inferenceservice_command_serves_chat_and_steering(runner, fsdp_trained, tmp_path_factory):
    from amopo.cluster.inferenceservice import MODEL_MOUNT, SERVE_PORT, inferenceservice_manifest

    model_dir = fsdp_trained[0] / "model"
    assert (model_dir / "amopo_conditioning.json").is_file()
    manifest = inferenceservice_manifest("amopo", "amopo", "s3://bucket/model", runtime="custom", image=runner.image,
                                         gpus=0)
    (container,) = manifest["spec"]["predictor"]["containers"]
    assert container["image"] == runner.image
    args = list(container["args"])
    port = free_port()
    args[args.index(str(SERVE_PORT))] = str(port)     # the only change: a free port on this host
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    # KServe's storage initializer puts the model at MODEL_MOUNT; here it is a read-only bind mount.
    proc = runner.start([*container["command"], *args], log, mounts=[(model_dir, MODEL_MOUNT)])
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + container["readinessProbe"]["httpGet"]["path"], proc, log)
        chat = {"model": "amopo", "messages": [{"role": "user", "content": "what is 2 plus one?"}],
                "max_tokens": 4, "temperature": 0}
        plain = post_json(base + "/openai/v1/chat/completions", chat)
        assert plain["choices"][0]["message"]["role"] == "assistant" and plain["usage"]["completion_tokens"] >= 1
        steered = post_json(base + "/openai/v1/chat/completions", {**chat, "dimension_targets": {"helpfulness": 4}})
        assert steered["dimension_targets"] == {"helpfulness": 4}
        assert "dimension_targets" not in plain
    finally:
        ImageRunner.stop(proc)


def test_local_pipeline_runs_end_to_end_in_the_image(runner, workspace):
    """`amopo pipeline run --local` as the image's entrypoint runs it: every step's command is the compiled
    pipeline's executor command, run by KFP's subprocess runner inside the image."""
    from pipelines.cli import COMPILED

    executors = next(yaml.safe_load_all(COMPILED.read_text()))["deploymentSpec"]["executors"]
    # each step runs the component through `python3 -m kfp.dsl.executor_main` in a shell: the image's
    # python3 must be the one with the project installed, and mktemp must find a writable /tmp
    assert all(e["container"]["command"][0] == "sh" and "python3 -m kfp.dsl.executor_main" in e["container"]["command"][2]
               for e in executors.values())
    params = {"data_source": "/workspace/train.jsonl", "eval_source": "/workspace/eval.jsonl",
              "base_model": "/workspace/tiny", "judge": "/workspace/tiny", "max_length": 128, "max_steps": 2,
              "learning_rate": 1e-3, "train_options": "{warmup_ratio: 0.0, progress: false}",
              "eval_num_instructions": 2, "eval_max_new_tokens": 4, "lm_eval_tasks": "",
              "eval_options": "{judge_top_k: 10000, lc_bootstrap: 10, progress: false}",
              "gate_against_base": "false", "gate_thresholds": "pref_accuracy/pairs>=4",
              "endpoint_check_tasks": ""}
    argv = [*runner.entrypoint, "pipeline", "run", "--local", "--work-dir", "/workspace/pipeline"]
    for key, value in params.items():
        argv += ["--param", f"{key}={value}"]
    result = ok(runner.run(argv, timeout=1500), "amopo pipeline run --local")
    summary = result.stdout[result.stdout.index("== amopo pipeline (local) =="):]
    assert "gate                  passed" in summary and "(this run's model, newly promoted)" in summary, summary
    assert "pipeline state        SUCCEEDED" in summary, summary
