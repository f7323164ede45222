"""The pipeline: its compiled YAML is fresh, its DAG is gated as designed, its parameters parse, and
the whole DAG runs on KFP's local runner (tiny model, real MLflow sqlite store, real `amopo serve`)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from amopo.errors import ConfigError
from tests.helpers.records import arithmetic_pairs, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "pipelines" / "amopo_pipeline.yaml"
HEAVY = ["annotate-data", "prepare-data", "train-model", "evaluate-model", "compare-objectives", "select-best",
         "register-candidates", "register-model", "deploy-model", "smoke-test-endpoint", "check-endpoint",
         "promote-model"]


IMAGE_PLACEHOLDER = "{{$.inputs.parameters['pipelinechannel--image']}}"
PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}")


def _compile(out: Path, *extra: str) -> None:
    subprocess.run([sys.executable, "-m", "amopo", "pipeline", "compile", "--output", str(out), *extra], cwd=ROOT,
                   check=True, capture_output=True)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("compiled") / "amopo_pipeline.yaml"
    _compile(out)
    docs = list(yaml.safe_load_all(out.read_text()))
    return out, {"spec": docs[0], "platform": docs[1] if len(docs) > 1 else {}}


def test_committed_yaml_is_fresh(compiled):
    out, _ = compiled
    assert COMMITTED.is_file(), "pipelines/amopo_pipeline.yaml is missing: run `amopo pipeline compile`"
    assert out.read_text() == COMMITTED.read_text(), \
        "pipelines/amopo_pipeline.yaml is stale: run `amopo pipeline compile` and commit the result"


def _tasks(dag: dict) -> dict:
    return dag["dag"]["tasks"]


def test_dag_is_gated_and_cleans_up(compiled):
    _, docs = compiled
    spec = docs["spec"]
    root = _tasks(spec["root"])
    exit_task = root["clean-up"]
    assert exit_task["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    handler = _tasks(spec["components"][root["exit-handler-1"]["componentRef"]["name"]])
    (cond_name,) = [name for name in handler if name.startswith("condition-")]
    assert {"annotate-data", "prepare-data", "plan-objectives", "compare-objectives", "select-best",
            "register-candidates", "gate-model"} <= set(handler)
    assert handler["prepare-data"]["inputs"]["artifacts"]["annotated"]["taskOutputArtifact"]["producerTask"] \
        == "annotate-data"
    (loop_name,) = [name for name in handler if name.startswith("for-loop-")]
    loop = handler[loop_name]
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--plan-objectives-Output"
    per_objective = _tasks(spec["components"][loop["componentRef"]["name"]])
    assert set(per_objective) == {"train-model", "evaluate-model"}
    trained = per_objective["train-model"]["inputs"]["parameters"]
    assert {k: trained[k]["componentInputParameter"] for k in ("objective", "beta", "learning_rate")} == {
        "objective": "pipelinechannel--plan-objectives-Output-loop-item",
        "beta": "pipelinechannel--plan-objectives-Output-loop-item",
        "learning_rate": "pipelinechannel--plan-objectives-Output-loop-item"}
    assert handler["gate-model"]["inputs"]["artifacts"]["results"]["taskOutputArtifact"]["producerTask"] \
        == "select-best"
    condition = handler[cond_name]
    assert condition["triggerPolicy"]["condition"] == \
        "inputs.parameter_values['pipelinechannel--gate-model-Output'] == true"
    assert "gate-model" in condition["dependentTasks"]
    gated = _tasks(spec["components"][condition["componentRef"]["name"]])
    assert set(gated) == {"register-model", "deploy-model", "smoke-test-endpoint", "check-endpoint", "promote-model"}
    assert {"smoke-test-endpoint", "check-endpoint"} <= set(gated["promote-model"]["dependentTasks"])
    # the challenger is registered after the candidates, so that it reuses the best one's version
    assert "register-candidates" in condition["dependentTasks"]
    assert gated["deploy-model"]["inputs"]["parameters"]["storage_uri"]["taskOutputParameter"]["producerTask"] \
        == "register-model"
    every = {**handler, **per_objective, **gated}
    for name in HEAVY:
        assert every[name].get("cachingOptions", {}).get("enableCache", False) is False, name
    # every component runs in the run's image (the `image` parameter), which carries kfp: nothing is
    # pip-installed at run time
    for name, executor in spec["deploymentSpec"]["executors"].items():
        assert executor["container"]["image"] == IMAGE_PLACEHOLDER, name
        assert "pip install" not in " ".join(executor["container"].get("command", [])), name
    from amopo import IMAGE

    assert spec["root"]["inputDefinitions"]["parameters"]["image"]["defaultValue"] == IMAGE


def test_compile_image_sets_the_image_of_every_step_in_one_place(tmp_path, compiled):
    out = tmp_path / "other.yaml"
    _compile(out, "--image", "registry.example.com/team/amopo:7")
    spec = next(yaml.safe_load_all(out.read_text()))
    assert spec["root"]["inputDefinitions"]["parameters"]["image"]["defaultValue"] == \
        "registry.example.com/team/amopo:7"
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {IMAGE_PLACEHOLDER}
    # nothing else names an image: the default above is the only place that changed
    assert "ghcr.io" not in out.read_text()
    default = compiled[0].read_text().replace("ghcr.io/amopo/amopo:0.1.0", "registry.example.com/team/amopo:7")
    assert out.read_text() == default


def _tasks_in_scope(spec: dict) -> list[tuple[str, dict, set[str]]]:
    """(name, task, inputs of the DAG around it) for every task of every DAG of the compiled pipeline."""
    found = []

    def walk(dag: dict, scope: set[str]) -> None:
        for name, task in dag["tasks"].items():
            found.append((name, task, scope))
            component = spec["components"][task["componentRef"]["name"]]
            if "dag" in component:
                walk(component["dag"], set(component.get("inputDefinitions", {}).get("parameters", {})))

    walk(spec["root"]["dag"], set(spec["root"]["inputDefinitions"]["parameters"]))
    return found


def test_every_parameter_a_task_reads_reaches_it_through_every_enclosing_dag(compiled):
    """kfp 2.17 compiles resource settings without passing their parameters down nested DAGs (the
    pipeline registers them itself): every input a task takes from its DAG must be an input of that
    DAG, and every placeholder in a container (image, resources) an input of its task."""
    _, docs = compiled
    spec = docs["spec"]
    executors = spec["deploymentSpec"]["executors"]
    checked = 0
    for name, task, scope in _tasks_in_scope(spec):
        inputs = task.get("inputs", {}).get("parameters", {})
        for key, source in inputs.items():
            if "componentInputParameter" in source:
                assert source["componentInputParameter"] in scope, (name, key, source)
        label = spec["components"][task["componentRef"]["name"]].get("executorLabel")
        if label:
            for placeholder in PLACEHOLDER.findall(json.dumps(executors[label]["container"])):
                assert placeholder in inputs, (name, placeholder)
                checked += 1
    assert checked >= 15 + 4 * 4   # every image, and the cpu/memory/gpu settings of four steps


@pytest.mark.parametrize("executor, prefix", [("exec-train-model", "train"), ("exec-evaluate-model", "eval"),
                                              ("exec-compare-objectives", "compare"), ("exec-check-endpoint", "endpoint_check")])
def test_train_evaluate_compare_and_endpoint_check_are_sized_by_parameters(compiled, executor, prefix):
    _, docs = compiled
    spec = docs["spec"]
    resources = spec["deploymentSpec"]["executors"][executor]["container"]["resources"]

    def param(field: str) -> str:
        return PLACEHOLDER.fullmatch(field).group(1).removeprefix("pipelinechannel--")

    assert param(resources["resourceCpuRequest"]) == f"{prefix}_cpu"
    assert param(resources["resourceMemoryRequest"]) == param(resources["resourceMemoryLimit"]) == f"{prefix}_memory"
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert param(resources["accelerator"]["resourceCount"]) == f"{prefix}_gpus"
    # KFP resolves a pod's resources from string values only, and "" must mean no GPU
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    for suffix in ("cpu", "memory", "gpus"):
        assert defaults[f"{prefix}_{suffix}"]["parameterType"] == "STRING"
    assert defaults[f"{prefix}_gpus"]["defaultValue"] == ""
    platform = docs["platform"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"][executor]
    assert "nodeSelector" in platform and "tolerations" in platform


@pytest.mark.parametrize("gpus, expected", [("", None), ("2", "2")])
@pytest.mark.parametrize("task, prefix", [("evaluate-model", "eval"), ("train-model", "train")])
def test_an_empty_gpu_count_gives_the_pod_no_gpu_at_all(compiled, gpus, expected, task, prefix):
    from pipelines.compiled_tasks import container_tasks
    from pipelines.step_pods import step_pods

    _, docs = compiled
    tasks = [t for t in container_tasks(docs["spec"], {f"{prefix}_gpus": gpus}) if t.name == task]
    (pod,) = step_pods(docs["spec"], docs["platform"], tasks, namespace="amopo", service_account=None, run_name="r")
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "2", "memory": "8Gi"}
    assert resources["limits"].get("nvidia.com/gpu") == expected
    assert ("nvidia.com/gpu" in resources["limits"]) is (expected is not None)


def test_the_train_pod_takes_its_size_from_the_train_parameters(compiled):
    """With launcher local, training runs in the train step's pod: it requests train_cpu and
    train_memory (also the limit) and train_gpus GPUs, and goes where node_selector and tolerations say."""
    from pipelines.compiled_tasks import container_tasks
    from pipelines.step_pods import step_pods

    _, docs = compiled
    params = {"train_cpu": "6", "train_memory": "48Gi", "train_gpus": "1", "node_selector": {"pool": "gpu"}}
    tasks = [t for t in container_tasks(docs["spec"], params) if t.name == "train-model"]
    (pod,) = step_pods(docs["spec"], docs["platform"], tasks, namespace="amopo", service_account=None, run_name="r")
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "6", "memory": "48Gi"}
    assert resources["limits"]["memory"] == "48Gi" and resources["limits"]["nvidia.com/gpu"] == "1"
    assert pod["spec"]["nodeSelector"] == {"pool": "gpu"}


def test_pod_sizes_kfp_could_not_use_are_refused_before_submission():
    from pipelines.params import check_pod_resources

    check_pod_resources({"eval_cpu": "500m", "eval_memory": "16Gi", "eval_gpus": "", "compare_gpus": "8"})
    for bad, words in [({"eval_gpus": "0"}, "eval_gpus: '0' must be a GPU count >= 1, or empty"),
                       ({"compare_gpus": "two"}, "compare_gpus"), ({"eval_cpu": "lots"}, "eval_cpu: 'lots' is not"),
                       ({"trainjob_memory": ""}, "trainjob_memory: '' is not a Kubernetes quantity"),
                       ({"train_gpus": "0"}, "train_gpus: '0' must be a GPU count >= 1, or empty"),
                       ({"train_cpu": "lots"}, "train_cpu: 'lots' is not")]:
        with pytest.raises(ConfigError, match=words):
            check_pod_resources(bad)


def test_secrets_and_scheduling_come_from_kubernetes_not_parameters(compiled):
    _, docs = compiled
    params = docs["spec"]["root"]["inputDefinitions"]["parameters"]
    assert not [p for p in params if re.search(r"password|secret|api_?key|(^|_)token$", p.lower())]
    executors = docs["platform"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    train = executors["exec-train-model"]
    assert train["pvcMount"][0]["mountPath"] == "/workspace"
    secret_envs = {(s["secretName"], kv["envVar"]) for s in train["secretAsEnv"] for kv in s["keyToEnv"]}
    assert ("amopo-s3", "AWS_ACCESS_KEY_ID") in secret_envs and all(s["optional"] for s in train["secretAsEnv"])
    evaluate = executors["exec-evaluate-model"]
    assert ("amopo-judge", "AMOPO_JUDGE_API_KEY") in {(s["secretName"], kv["envVar"]) for s in evaluate["secretAsEnv"]
                                                     for kv in s["keyToEnv"]}
    assert "nodeSelector" in evaluate and "tolerations" in evaluate


def test_params_parse_with_types_and_refuse_unknown_names():
    from pipelines.cli import parse_params

    got = parse_params(["max_steps=8", "learning_rate=1", "train_options={lora: true}", "tolerations=[]",
                        "data_source=hub/name", "keep_serving=true"])
    assert got == {"max_steps": 8, "learning_rate": 1.0, "train_options": {"lora": True}, "tolerations": [],
                   "data_source": "hub/name", "keep_serving": True}
    with pytest.raises(ConfigError, match="not a pipeline parameter; known: .*base_model"):
        parse_params(["max_stepz=8"])
    with pytest.raises(ConfigError, match="max_steps: expected int"):
        parse_params(["max_steps=eight"])
    assert parse_params(["learning_rate=3e-4", "gamma=1E0"]) == {"learning_rate": 3e-4, "gamma": 1.0}  # YAML 1.1 strings
    with pytest.raises(ConfigError, match="learning_rate: expected float, got 'fast'"):
        parse_params(["learning_rate=fast"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_params(["max_steps"])


def test_submit_to_an_unreachable_server_is_one_clear_error(tmp_path):
    from pipelines.cli import main

    proc = subprocess.run([sys.executable, "-m", "amopo", "pipeline", "submit", "--host", "http://127.0.0.1:9",
                           "--package", str(COMMITTED)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "submitting to http://127.0.0.1:9 failed" in proc.stderr and "Traceback" not in proc.stderr
    assert callable(main)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, tiny_model_dir):
    """One whole local pipeline run (KFP SubprocessRunner) on a tiny model: coherence annotated by the
    judge, AMoPO and DPO trained, compared and both registered, the best gated, served and promoted;
    then a second run, of one objective, whose gate rejects, in the same MLflow store."""
    from pipelines.local_run import print_summary, run_local

    root = tmp_path_factory.mktemp("pipeline")
    write_jsonl(root / "train.jsonl", arithmetic_pairs(8))
    write_jsonl(root / "eval.jsonl", arithmetic_pairs(4, offset=50))
    common = dict(data_source=str(root / "train.jsonl"), eval_source=str(root / "eval.jsonl"),
                  base_model=str(tiny_model_dir), judge=str(tiny_model_dir), max_length=128, max_steps=2,
                  learning_rate=1e-3, train_options={"warmup_ratio": 0.0, "progress": False},
                  eval_num_instructions=2, eval_max_new_tokens=4, lm_eval_tasks="",
                  eval_options={"judge_top_k": 10000, "lc_bootstrap": 10, "progress": False},
                  gate_against_base=False)
    # the first run as `amopo pipeline run --local` shows it: its console, summary included
    screen = io.StringIO()
    with contextlib.redirect_stdout(screen):
        first = run_local({**common, "gate_thresholds": "pref_accuracy/pairs>=4", "objectives": "amopo,dpo",
                           "register_candidates": True, "annotate_dimension": "coherence",
                           "annotate_options": {"judge_top_k": 512, "progress": False}}, work_dir=root / "work")
        print_summary(first)
    first["console"] = screen.getvalue()
    second = run_local({**common, "gate_thresholds": "pref_accuracy/mean_dimensions>1.5"}, work_dir=root / "work")
    return first, second


@pytest.mark.slow
def test_local_run_registers_serves_smoke_tests_and_promotes(local_run):
    from mlflow.tracking import MlflowClient

    first, _ = local_run
    assert first["final_state"] == "SUCCEEDED" and first["gate_passed"] is True
    assert Path(first["model_dir"], "model.safetensors").is_file()
    assert json.loads(Path(first["metrics_path"]).read_text())["pref_accuracy/pairs"] == 4
    # both objectives registered as candidates (in plan order); the gate's choice reuses its version
    best = first["best_objective"]
    versions = dict(c.rpartition("=")[::2] for c in first["candidates"].split(","))
    assert list(versions) == ["amopo", "dpo"] and sorted(versions.values()) == ["1", "2"]
    assert first["registered_version"] == int(versions[best])
    assert first["registered_uri"] == f"models:/amopo/{versions[best]}"
    assert first["endpoint_url"].startswith("http://127.0.0.1:") and first["smoke_reply"]
    assert first["promoted"] is True and first["champion_version"] == int(versions[best])
    # the exit handler stopped the server: nothing answers any more, no state is left
    assert first["still_serving"] is False
    with pytest.raises(OSError):
        import urllib.request
        urllib.request.urlopen(first["endpoint_url"] + "/v2/health/live", timeout=3)
    client = MlflowClient(first["mlflow_tracking_uri"])
    champion = client.get_model_version_by_alias("amopo", "champion")
    assert str(champion.version) == versions[best] and champion.tags["amopo.gate.decision"] == "promoted"
    for label, version in versions.items():
        tags = client.get_model_version("amopo", version).tags
        assert tags["amopo.comparison.label"] == label and tags["amopo.objective"] == label
        assert tags["amopo.comparison.role"] == ("best" if label == best else "candidate")
    assert any(p.endswith("training_curves.png") for p in first["plots"])


@pytest.mark.slow
def test_the_comparison_run_trains_each_objective_at_its_own_beta_and_nests_its_runs(local_run):
    from mlflow.tracking import MlflowClient

    first, _ = local_run
    run = Path(first["run_dir"])
    betas = {}
    for summary in run.glob("for-loop-*/train-model*/model/metrics.json"):
        trained = json.loads(summary.read_text())
        betas[trained["objective"]] = trained["beta"]
    assert betas == {"amopo": 0.8, "dpo": 0.1}
    flat = json.loads(Path(first["comparison_dir"], "comparison.json").read_text())
    assert flat["objectives"] == ["amopo", "dpo"] and flat["best"] == first["best_objective"]
    assert {"amopo/pref_accuracy/plain", "dpo/pref_accuracy/plain", "dpo/train/tokens_per_s"} <= set(flat)
    table = "\n".join(line for line in first["console"].splitlines() if line.startswith("|"))
    assert "held-out accuracy (plain prompt)" in table and "| amopo" in table.replace("|  ", "| ")
    client = MlflowClient(first["mlflow_tracking_uri"])
    (parent,) = client.search_runs([client.get_experiment_by_name("amopo-pipeline").experiment_id],
                                   "tags.`amopo.kind` = 'comparison' and tags.`amopo.objectives` = 'amopo,dpo'")
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.data.tags["amopo.comparison_label"] for c in children) == ["amopo", "dpo"]
    # the judge annotated coherence before prepare, and the prepared records carry it
    record = json.loads(next(run.glob("annotate-data/annotated/annotation.json")).read_text())
    assert record["dimension"] == "coherence" and record["counts"]["train"]["to_score"] == 16
    prepared = next(run.glob("prepare-data/dataset/train.jsonl")).read_text().splitlines()
    assert all("coherence" in json.loads(line)["chosen"] for line in prepared)


@pytest.mark.slow
def test_the_local_run_console_is_one_screen_and_the_step_logs_hold_the_detail(local_run):
    first, second = local_run
    lines = first["console"].splitlines()
    assert len(lines) < 65, first["console"]   # two objectives: their steps and the comparison table
    assert "executor_input" not in first["console"] and "Streamed logs" not in first["console"]
    for task in HEAVY:       # a line as each step starts and one as it ends, with its key figure
        assert any(re.match(rf"\[ *\d+:\d\d\] {task} +started$", line) for line in lines), (task, first["console"])
        assert any(re.match(rf"\[ *\d+:\d\d\] {task} +done ", line) for line in lines), (task, first["console"])
    done = {m[1]: line for line in lines if (m := re.match(r"\[[ \d:]+\] (\S+) +done ", line))}
    assert "8 train pairs" in done["prepare-data"] and "2 steps" in done["train-model"]
    v = first["registered_version"]
    assert f"version {v} (models:/amopo/{v})" in done["register-model"] and f"champion: version {v}" in done["promote-model"]
    assert done["annotate-data"].endswith("coherence: 24 responses scored")
    assert "| held-out accuracy (plain prompt) ↑ |" in first["console"] and "| steer " not in first["console"]
    assert re.search(r"registered amopo as version \d, dpo as version \d$", done["register-candidates"])
    assert first["endpoint_url"] in done["deploy-model"] and "s  passed: " in done["gate-model"]
    assert f"step logs             {first['log_dir']}/" in first["console"]
    train_log = Path(first["logs"]["train-model"]).read_text()
    assert "Got executor_input" in train_log and "Looking for component `train_model`" in train_log
    assert Path(first["logs"]["deploy-model"]).parent == Path(first["log_dir"])
    assert "Running pipeline" in Path(first["log_dir"], "pipeline.log").read_text()
    # each run its own log folder; "latest" is the newest
    assert second["log_dir"] != first["log_dir"]
    assert Path(first["log_dir"]).parent.joinpath("latest").resolve() == Path(second["log_dir"]).resolve()


@pytest.mark.slow
def test_a_rejected_gate_registers_and_deploys_nothing(local_run):
    from mlflow.tracking import MlflowClient

    _, second = local_run
    assert second["final_state"] == "SUCCEEDED" and second["gate_passed"] is False
    assert "threshold pref_accuracy/mean_dimensions>1.5 fails" in second["gate_reasons"]
    assert second["registered_uri"] is None and second["endpoint_url"] is None and second["promoted"] is None
    client = MlflowClient(second["mlflow_tracking_uri"])
    assert sorted(str(v.version) for v in client.search_model_versions("name='amopo'")) == ["1", "2"]
