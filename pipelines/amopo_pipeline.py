"""The pipeline: [annotate →] prepare → plan → [train → evaluate] per objective → compare → select the best →
gate → [register → deploy → smoke test → endpoint check → promote], inside an exit handler that cleans up whatever
happened.

``objectives`` (e.g. "amopo,simpo,dpo", or ablations such as "amopo:weighting=uniform") trains and
evaluates each entry in a ParallelFor on the same prepared data, base model, instructions and
judge, each at its objective's own β unless set (amopo.compare.plan); the comparison report goes to
MLflow as a parent run of the entries' runs, and the best entry on ``gate_metric`` goes on to the
gate and the registry. Empty ``objectives`` trains ``objective`` alone, as a comparison of one.
``register_candidates`` also registers every compared objective as an alias-free version tagged
with its entry (amopo.registry.candidates). ``annotate_dimension`` (e.g. instruction_following, which
raw HelpSteer2 lacks) has the judge score it on the data before prepare (amopo.annotate.step).

Every parameter's default is the embedded one-machine setting (shipped sample data, SmolLM2-135M,
sqlite MLflow, `amopo serve` on 127.0.0.1); on a cluster set launcher="trainjob",
deploy_target="kserve" and the MLflow server's URI. Credentials never travel as parameters: pods
read them from Kubernetes Secrets as environment variables (all optional):

    amopo-mlflow-auth  MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD   (MLflow with basic auth)
    amopo-s3           AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, MLFLOW_S3_ENDPOINT_URL
                       (clients write MLflow artifacts to S3 themselves; see k8s/base/mlflow.yaml)
    amopo-judge        api-key → AMOPO_JUDGE_API_KEY     (an OpenAI-compatible judge endpoint)
    amopo-serve        api-key → AMOPO_SERVE_API_KEY     (bearer token of the served endpoint)
"""

import os

from kfp import dsl, kubernetes

from amopo.registry.gate import DEFAULT_METRIC as GATE_METRIC
from components.annotate import annotate_data
from components.cleanup import clean_up
from components.compare import compare_objectives
from components.deploy import deploy_model
from components.endpoint_check import check_endpoint
from components.evaluate import evaluate_model
from components.gate import gate_model
from components.image import IMAGE
from components.plan import plan_objectives
from components.prepare import prepare_data
from components.promote import promote_model
from components.register import register_candidates as register_all_candidates, register_model
from components.select import select_best
from components.smoke_test import smoke_test_endpoint
from components.train import train_model

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
# Objectives trained at once (0: all; fixed when the pipeline is compiled). The local run sets 1:
# one machine's cores and memory are better spent on one training at a time.
PARALLEL_OBJECTIVES = int(os.environ.get("AMOPO_PARALLEL_OBJECTIVES", "0"))
WORKSPACE = "/workspace"
_SECRETS = {
    "amopo-mlflow-auth": {k: k for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")},
    "amopo-s3": {k: k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL")},
}


def _with_secrets(task, *extra: tuple[str, dict]):
    for name, keys in [*_SECRETS.items(), *extra]:
        kubernetes.use_secret_as_env(task, secret_name=name, secret_key_to_env=keys, optional=True)
    return task


def _heavy(task, name: str):
    task.set_caching_options(False)
    task.set_display_name(name)
    return task


@dsl.pipeline(name="amopo", description="AMoPO multi-objective preference alignment: prepare, train, "
                                        "evaluate, gate, register, deploy, smoke-test and promote a model.")
def amopo_pipeline(
    data_source: str = "sample",
    data_format: str = "amopo",
    eval_source: str = "",
    dimensions: str = "",
    base_model: str = EMBEDDED_MODEL,
    max_length: int = 1024,
    prepare_options: dict = {},
    annotate_dimension: str = "",  # e.g. instruction_following: the judge scores it where the data lacks it; "" skips
    annotate_options: dict = {},
    objective: str = "amopo",
    objectives: str = "",
    beta: float = -1.0,  # < 0: each objective's own default (0.8 amopo/simpo, 0.1 dpo/modpo)
    gamma: float = 2.0,
    learning_rate: float = 1e-4,
    max_steps: int = 24,
    batch_size: int = 2,
    grad_accum: int = 1,
    train_options: dict = {},
    heldout_max_pairs: int = 32,
    launcher: str = "local",
    num_processes: int = 1,
    num_nodes: int = 1,
    gpus_per_node: int = 0,
    accelerator_type: str = "",
    accelerate_config: str = "ddp",  # ddp | fsdp (FSDP2 with the shipped configs/accelerate/fsdp.yaml)
    image: str = IMAGE,
    namespace: str = "amopo",
    workspace_pvc: str = "amopo-workspace",
    node_selector: dict = {},
    tolerations: list = [],
    train_timeout_minutes: int = 1440,
    training_runtime: str = "torch-distributed",  # or the project's amopo-torch (k8s/runtime/)
    queue_name: str = "",  # Kueue LocalQueue for TrainJobs and InferenceServices (label kueue.x-k8s.io/queue-name)
    mlflow_tracking_uri: str = "",
    mlflow_experiment: str = "amopo-pipeline",
    judge: str = EMBEDDED_MODEL,
    judge_model_name: str = "",
    eval_dimensions: str = "",
    eval_num_instructions: int = 16,
    eval_max_new_tokens: int = 96,
    lm_eval_tasks: str = "amopo_arithmetic,amopo_facts_mc",
    lm_eval_limit: int = 20,
    eval_options: dict = {},
    gate_metric: str = GATE_METRIC,  # pref_accuracy/plain: conditioned accuracies see the chosen score
    gate_min_improvement: float = 0.0,
    gate_thresholds: str = "",
    gate_against_base: bool = True,
    registered_model_name: str = "amopo",
    deploy_target: str = "local",
    serving_namespace: str = "amopo",
    serving_runtime: str = "huggingface",
    serving_gpus: int = 1,
    canary_traffic_percent: int = 100,
    serving_service_account: str = "",
    deploy_timeout_minutes: int = 15,
    smoke_prompt: str = "In one sentence: what is a preference dataset used for?",
    endpoint_check_tasks: str = "amopo_facts_mc",  # lm-eval tasks the endpoint must score as the checkpoint; "" skips
    endpoint_check_limit: int = 20,
    endpoint_check_tolerance: float = 0.05,
    local_state_dir: str = "runs/pipeline/serving",
    keep_serving: bool = False,
    compare_head_to_head: bool = True,
    compare_head_to_head_instructions: int = 0,
    compare_options: dict = {},
    register_candidates: bool = False,  # every compared objective as a tagged version (no alias)
):
    run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
    cleanup = clean_up(target=deploy_target, state_dir=local_state_dir, run_id=run_id, keep_serving=keep_serving)
    cleanup.set_display_name("clean up")
    with dsl.ExitHandler(cleanup, name="amopo"):
        annotated = _heavy(annotate_data(data_source=data_source, data_format=data_format, eval_source=eval_source,
                                         dimension=annotate_dimension, judge=judge, judge_model_name=judge_model_name,
                                         annotate_options=annotate_options), "annotate data")
        _with_secrets(annotated, ("amopo-judge", {"api-key": "AMOPO_JUDGE_API_KEY"}))
        prepared = _heavy(prepare_data(data_source=data_source, data_format=data_format, eval_source=eval_source,
                                       dimensions=dimensions, base_model=base_model, max_length=max_length,
                                       prepare_options=prepare_options, annotated=annotated.outputs["annotated"]),
                          "prepare data")
        plan = plan_objectives(objectives=objectives, objective=objective, learning_rate=learning_rate, beta=beta,
                               train_options=train_options)
        plan.set_display_name("plan objectives")
        with dsl.ParallelFor(plan.output, parallelism=PARALLEL_OBJECTIVES, name="objectives") as item:
            trained = _heavy(train_model(
                dataset=prepared.outputs["dataset"], base_model=base_model, objective=item.objective, beta=item.beta,
                gamma=gamma, learning_rate=item.learning_rate, max_steps=max_steps, batch_size=batch_size,
                grad_accum=grad_accum, max_length=max_length, heldout_max_pairs=heldout_max_pairs,
                train_options=item.train_options, mlflow_tracking_uri=mlflow_tracking_uri,
                mlflow_experiment=mlflow_experiment, launcher=launcher, num_processes=num_processes,
                num_nodes=num_nodes, gpus_per_node=gpus_per_node, accelerator_type=accelerator_type,
                accelerate_config=accelerate_config, image=image,
                namespace=namespace, workspace_pvc=workspace_pvc, node_selector=node_selector,
                tolerations=tolerations, timeout_minutes=train_timeout_minutes, training_runtime=training_runtime,
                queue_name=queue_name), "train")
            _with_secrets(trained)
            kubernetes.mount_pvc(trained, pvc_name=workspace_pvc, mount_path=WORKSPACE)

            evaluated = _heavy(evaluate_model(
                model=trained.outputs["model"], dataset=prepared.outputs["dataset"], judge=judge,
                judge_model_name=judge_model_name, dimensions=eval_dimensions,
                num_instructions=eval_num_instructions, max_new_tokens=eval_max_new_tokens,
                lm_eval_tasks=lm_eval_tasks, lm_eval_limit=lm_eval_limit, heldout_max_pairs=heldout_max_pairs,
                eval_options=eval_options,
                mlflow_tracking_uri=mlflow_tracking_uri), "evaluate")
            _with_secrets(evaluated, ("amopo-judge", {"api-key": "AMOPO_JUDGE_API_KEY"}))
            kubernetes.add_node_selector_json(evaluated, node_selector)
            kubernetes.add_toleration_json(evaluated, tolerations)

        compared = _heavy(compare_objectives(
            trainings=dsl.Collected(trained.outputs["model"]), evaluations=dsl.Collected(evaluated.outputs["results"]),
            labels=plan.output, metric=gate_metric, judge=judge, judge_model_name=judge_model_name,
            head_to_head=compare_head_to_head, head_to_head_instructions=compare_head_to_head_instructions,
            compare_options=compare_options, mlflow_tracking_uri=mlflow_tracking_uri,
            mlflow_experiment=mlflow_experiment), "compare objectives")
        _with_secrets(compared, ("amopo-judge", {"api-key": "AMOPO_JUDGE_API_KEY"}))
        selected = _heavy(select_best(
            trainings=dsl.Collected(trained.outputs["model"]), evaluations=dsl.Collected(evaluated.outputs["results"]),
            labels=plan.output, best=compared.outputs["Output"], comparison=compared.outputs["comparison"]),
            "select best")
        candidates = _heavy(register_all_candidates(
            enabled=register_candidates, trainings=dsl.Collected(trained.outputs["model"]),
            evaluations=dsl.Collected(evaluated.outputs["results"]), labels=plan.output,
            comparison=compared.outputs["comparison"], registered_name=registered_model_name,
            mlflow_tracking_uri=mlflow_tracking_uri), "register candidates")
        _with_secrets(candidates)

        gate = gate_model(results=selected.outputs["results"], gate_metric=gate_metric,
                          min_improvement=gate_min_improvement, thresholds=gate_thresholds,
                          against_base=gate_against_base)
        gate.set_display_name("gate")
        with dsl.If(gate.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 (a KFP condition)
            registered = _heavy(register_model(model=selected.outputs["model"], results=selected.outputs["results"],
                                               registered_name=registered_model_name,
                                               mlflow_tracking_uri=mlflow_tracking_uri), "register challenger")
            registered.after(candidates)   # so that the challenger reuses its candidate version
            _with_secrets(registered)
            deployed = _heavy(deploy_model(
                model_uri=registered.outputs["model_uri"], storage_uri=registered.outputs["storage_uri"],
                target=deploy_target, service_name=registered_model_name, mlflow_tracking_uri=mlflow_tracking_uri,
                namespace=serving_namespace, runtime=serving_runtime, image=image, gpus=serving_gpus,
                accelerator_type=accelerator_type, node_selector=node_selector, tolerations=tolerations,
                canary_traffic_percent=canary_traffic_percent, service_account=serving_service_account,
                state_dir=local_state_dir, run_id=run_id, timeout_minutes=deploy_timeout_minutes,
                queue_name=queue_name), "deploy")
            _with_secrets(deployed)
            smoked = _heavy(smoke_test_endpoint(url=deployed.outputs["url"], model_name=deployed.outputs["model_name"],
                                                prompt=smoke_prompt), "smoke test")
            kubernetes.use_secret_as_env(smoked, secret_name="amopo-serve", secret_key_to_env={"api-key": "AMOPO_SERVE_API_KEY"},
                                         optional=True)
            checked = _heavy(check_endpoint(url=deployed.outputs["url"], model_name=deployed.outputs["model_name"],
                                            model=selected.outputs["model"], tasks=endpoint_check_tasks,
                                            limit=endpoint_check_limit, tolerance=endpoint_check_tolerance),
                             "check endpoint against checkpoint")
            kubernetes.use_secret_as_env(checked, secret_name="amopo-serve",
                                         secret_key_to_env={"api-key": "AMOPO_SERVE_API_KEY"}, optional=True)
            promoted = _heavy(promote_model(registered_name=registered_model_name,
                                            version=registered.outputs["version"], gate_metric=gate_metric,
                                            min_improvement=gate_min_improvement, thresholds=gate_thresholds,
                                            mlflow_tracking_uri=mlflow_tracking_uri), "promote champion")
            promoted.after(smoked, checked)
            _with_secrets(promoted)
