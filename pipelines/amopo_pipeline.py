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
sqlite MLflow, `amopo serve` on 127.0.0.1); a cluster run takes its settings from a values file
(k8s/values/, `amopo pipeline submit --values FILE`): launcher "trainjob", deploy_target "kserve",
the MLflow server's URI, a judge endpoint, the image, namespace, queue and pod sizes.

``image`` is the image of every step (``set_container_image``), of the TrainJobs and of the custom
InferenceService. The evaluate, compare and endpoint-check pods request ``eval_cpu``,
``eval_memory`` (also the limit) and ``eval_gpus`` NVIDIA GPUs (``compare_*``, ``endpoint_check_*``
likewise; ``train_*`` for the train step's pod, where launcher "local" trains and "trainjob" only
submits and watches the TrainJob) and go where ``node_selector`` and ``tolerations`` say; these are strings because KFP
reads a pod's resources only from string parameters, and an empty GPU count asks for no GPU (KFP
adds an accelerator only when both its type and its count are non-empty). TrainJob nodes request
``trainjob_cpu``/``trainjob_memory`` and ``gpus_per_node``; InferenceServices ``serving_cpu``/
``serving_memory`` and ``serving_gpus``. Credentials never travel as parameters: pods read them from
Kubernetes Secrets as environment variables (all optional):

    amopo-mlflow-auth  MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD   (MLflow with basic auth)
    amopo-s3           AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, MLFLOW_S3_ENDPOINT_URL
                       (clients write MLflow artifacts to S3 themselves; see k8s/base/mlflow.yaml)
    amopo-judge        api-key → AMOPO_JUDGE_API_KEY     (an OpenAI-compatible judge endpoint)
    amopo-serve        api-key → AMOPO_SERVE_API_KEY     (bearer token of the served endpoint)
"""

import os

from kfp import dsl, kubernetes

from amopo.cluster.launch_training import STEP_WORKSPACE
from amopo.cluster.pod_parts import GPU_RESOURCE
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
# registry kubeflow: the Model Registry's token (otherwise the pod's service-account token is sent)
_MODEL_REGISTRY_SECRET = ("amopo-model-registry", {"token": "AMOPO_MODEL_REGISTRY_TOKEN"})
_SECRETS = {
    "amopo-mlflow-auth": {k: k for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")},
    "amopo-s3": {k: k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL")},
}


def _with_secrets(task, *extra: tuple[str, dict]):
    for name, keys in [*_SECRETS.items(), *extra]:
        kubernetes.use_secret_as_env(task, secret_name=name, secret_key_to_env=keys, optional=True)
    return task


def _step(task, name: str, image, *, heavy: bool = True):
    """``task`` named ``name``, run in ``image``; a heavy step (real work, outputs that must be fresh) is never cached."""
    if heavy:
        task.set_caching_options(False)
    task.set_display_name(name)
    task.set_container_image(image)
    return task


def _sized(task, cpu, memory, gpus):
    """CPU and memory requests (memory also the limit, as for TrainJobs and InferenceServices) and
    ``gpus`` NVIDIA GPUs, from string parameters; an empty ``gpus`` sets no GPU."""
    task.set_cpu_request(cpu).set_memory_request(memory).set_memory_limit(memory)
    task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(gpus)
    # kfp 2.17's resource setters do not register their parameters, so a task inside a loop, a
    # condition or an exit handler would refer to inputs its enclosing DAGs never receive.
    task.register_pipeline_channels([cpu, memory, gpus])
    return task


def _placed(task, node_selector, tolerations):
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.add_toleration_json(task, tolerations)
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
    annotate_dimension: str = "",
    annotate_options: dict = {},
    objective: str = "amopo",
    objectives: str = "",
    beta: float = -1.0,
    gamma: float = 2.0,
    learning_rate: float = 1e-4,
    max_steps: int = 24,
    batch_size: int = 2,
    gradient_accumulation_steps: int = 1,
    train_options: dict = {},
    heldout_max_pairs: int = 32,
    launcher: str = "local",
    num_processes: int = 1,
    num_nodes: int = 1,
    gpus_per_node: int = 0,
    accelerator_type: str = "",
    fsdp_config: str = "",
    trainjob_cpu: str = "4",
    trainjob_memory: str = "16Gi",
    train_cpu: str = "2",
    train_memory: str = "8Gi",
    train_gpus: str = "",
    image: str = IMAGE,
    namespace: str = "amopo",
    workspace_pvc: str = "amopo-workspace",
    node_selector: dict = {},
    tolerations: list = [],
    train_timeout_minutes: int = 1440,
    training_runtime: str = "torch-distributed",
    queue_name: str = "",
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
    eval_cpu: str = "2",
    eval_memory: str = "8Gi",
    eval_gpus: str = "",
    gate_metric: str = GATE_METRIC,
    gate_min_improvement: float = 0.0,
    gate_thresholds: str = "",
    gate_against_base: bool = True,
    registered_model_name: str = "amopo",
    registry: str = "mlflow",  # or kubeflow: the Kubeflow Model Registry at model_registry_url
    model_registry_url: str = "",
    deploy_target: str = "local",
    serving_namespace: str = "amopo",
    serving_runtime: str = "huggingface",
    serving_gpus: int = 1,
    serving_cpu: str = "2",
    serving_memory: str = "8Gi",
    canary_traffic_percent: int = 100,
    serving_service_account: str = "",
    deploy_timeout_minutes: int = 15,
    smoke_prompt: str = "In one sentence: what is a preference dataset used for?",
    endpoint_check_tasks: str = "amopo_facts_mc",
    endpoint_check_limit: int = 20,
    endpoint_check_tolerance: float = 0.05,
    endpoint_check_cpu: str = "1",
    endpoint_check_memory: str = "4Gi",
    endpoint_check_gpus: str = "",
    local_state_dir: str = "runs/pipeline/serving",
    keep_serving: bool = False,
    compare_head_to_head: bool = True,
    compare_head_to_head_instructions: int = 0,
    compare_options: dict = {},
    compare_cpu: str = "1",
    compare_memory: str = "4Gi",
    compare_gpus: str = "",
    register_candidates: bool = False,
):
    """AMoPO on preference data, evaluated, gated, registered, served and promoted (module docstring).

    Args:
        data_source: Preference data: "sample" (shipped), a .jsonl/.jsonl.gz/.parquet file, or a hub dataset "owner/name[:split]".
        data_format: Format of data_source: amopo (prompt/chosen/rejected records), helpsteer2 or ultrafeedback.
        eval_source: Held-out data in the same format; empty holds out a share of data_source's prompts.
        dimensions: Comma-separated preference dimensions to train on; empty takes the format's defaults.
        base_model: Model to align: a Hugging Face hub id, a folder in the image, or embedded:smollm2-135m-instruct.
        max_length: Tokens per sequence, prompt and response together (longer pairs are dropped).
        prepare_options: Any other `amopo prepare` option by name, e.g. {"steer_both_orientations": true}.
        annotate_dimension: A dimension the judge scores where the data lacks it (e.g. instruction_following); empty skips the step's work.
        annotate_options: Any other `amopo annotate` option by name, e.g. {"cache": "/workspace/verdicts.jsonl"}.
        objective: Training objective when objectives is empty: amopo, simpo, dpo or modpo.
        objectives: Comma-separated objectives to train and compare side by side (e.g. "amopo,simpo,dpo", "amopo:weighting=uniform"); empty trains objective alone.
        beta: β of the objective; below 0 takes each objective's own default (0.8 amopo/simpo, 0.1 dpo/modpo).
        gamma: γ, the reward margin of amopo and simpo.
        learning_rate: Peak learning rate (AdamW, linear warm-up, cosine decay).
        max_steps: Optimizer steps; 0 trains for train_options.epochs instead.
        batch_size: Preference pairs per process per micro-step.
        gradient_accumulation_steps: Micro-steps per optimizer step.
        train_options: Any other `amopo train` option by name, e.g. {"sft_weight": 0.5, "lora": true}.
        heldout_max_pairs: Held-out pairs scored before and after training and in evaluation (0: all).
        launcher: Where training runs: local (in the step's pod) or trainjob (a Kubeflow Trainer TrainJob).
        num_processes: Training processes in the step's pod (local) or per CPU node (trainjob).
        num_nodes: TrainJob nodes.
        gpus_per_node: GPUs per TrainJob node (0: CPU nodes).
        accelerator_type: GPU product the TrainJob and serving nodes must carry (node label nvidia.com/gpu.product); empty: any.
        fsdp_config: Empty for data-parallel training, or configs/accelerate/fsdp.yaml to shard with FSDP2 (`amopo train --fsdp-config`).
        trainjob_cpu: CPU request of each TrainJob node (a Kubernetes quantity).
        trainjob_memory: Memory request and limit of each TrainJob node (a Kubernetes quantity).
        train_cpu: CPU request of the train step's pod: with launcher local training runs in it; with trainjob it only submits and watches the TrainJob, so keep it small.
        train_memory: Memory request and limit of the train step's pod (launcher local: of the training itself; trainjob: keep it small).
        train_gpus: NVIDIA GPUs of the train step's pod (launcher local: the training's; trainjob: leave empty); empty: none.
        image: Image of every step, of the TrainJobs and of the custom InferenceService.
        namespace: Namespace of the run and its TrainJobs (submit refuses any other).
        workspace_pvc: ReadWriteMany volume the train step and its TrainJob share.
        node_selector: Node labels that training, evaluation, comparison, endpoint-check and serving pods need.
        tolerations: Tolerations of those pods (Kubernetes toleration objects).
        train_timeout_minutes: Longest a TrainJob may run before it is deleted and the step fails.
        training_runtime: ClusterTrainingRuntime of the TrainJobs: torch-distributed, or the project's amopo-torch (k8s/runtime/).
        queue_name: Kueue LocalQueue admitting TrainJobs and InferenceServices; empty: none.
        mlflow_tracking_uri: MLflow tracking and registry URI; empty: $MLFLOW_TRACKING_URI, else the embedded sqlite store.
        mlflow_experiment: MLflow experiment of the training and evaluation runs.
        judge: Judge of win rates and dimension ratings: a model folder or hub id, embedded:..., or an OpenAI-compatible URL.
        judge_model_name: Model name to send to an OpenAI-compatible judge; empty: the server's only model.
        eval_dimensions: Comma-separated dimensions the judge rates; empty: the trained ones it has a rubric for.
        eval_num_instructions: Instructions answered for win rates and dimension ratings.
        eval_max_new_tokens: Longest answer generated in evaluation, in tokens.
        lm_eval_tasks: Comma-separated lm-eval tasks scored on the trained and the base model; empty skips them.
        lm_eval_limit: Documents per lm-eval task (0: all).
        eval_options: Any other `amopo evaluate` option by name, e.g. {"steer_dimensions": ["verbosity"]}.
        eval_cpu: CPU request of the evaluate pod.
        eval_memory: Memory request and limit of the evaluate pod.
        eval_gpus: NVIDIA GPUs of the evaluate pod; empty: none.
        gate_metric: Metric the best objective and the gate are chosen on (pref_accuracy/plain: the chosen score is never shown).
        gate_min_improvement: How much the gate metric must beat the base model (or the champion) by.
        gate_thresholds: Extra conditions a model must meet, comma-separated, e.g. "winrate/lc>=0.5".
        gate_against_base: Compare with the base model (true) or with the registered champion (false).
        registered_model_name: Name of the model in the registry and of its InferenceService.
        registry: Where register, promote and deploy keep the versions: mlflow (MLflow's Model Registry) or kubeflow (Kubeflow's Model Registry at model_registry_url: the run as the version's source, its token from the Secret amopo-model-registry).
        model_registry_url: REST address of the Kubeflow Model Registry (registry kubeflow), e.g. http://model-registry-service.kubeflow.svc.cluster.local:8080.
        deploy_target: Where the gated model is served: local (`amopo serve` on 127.0.0.1) or kserve.
        serving_namespace: Namespace of the InferenceService.
        serving_runtime: huggingface (KServe's runtime, vLLM on GPUs; steering through the chat template) or custom (`amopo serve` in the image).
        serving_gpus: GPUs of the InferenceService.
        serving_cpu: CPU request of the InferenceService.
        serving_memory: Memory request and limit of the InferenceService.
        canary_traffic_percent: Share of traffic the new revision gets (100: all).
        serving_service_account: Service account of the InferenceService (e.g. one with the S3 credentials); empty: the namespace's default.
        deploy_timeout_minutes: Longest wait for the InferenceService to become ready.
        smoke_prompt: Prompt the smoke test sends, plainly and steered.
        endpoint_check_tasks: Comma-separated lm-eval tasks the endpoint must score as the checkpoint does; empty skips the check.
        endpoint_check_limit: Documents per endpoint-check task.
        endpoint_check_tolerance: Largest score gap allowed between the endpoint and the checkpoint.
        endpoint_check_cpu: CPU request of the endpoint-check pod.
        endpoint_check_memory: Memory request and limit of the endpoint-check pod.
        endpoint_check_gpus: NVIDIA GPUs of the endpoint-check pod; empty: none.
        local_state_dir: Where a local deploy records its server (deploy_target local).
        keep_serving: Leave the local server running after the run (stop: amopo pipeline stop-serving).
        compare_head_to_head: Have the judge compare the objectives' answers pairwise.
        compare_head_to_head_instructions: Instructions of the head-to-head comparison (0: the evaluation's).
        compare_options: Any other `amopo compare` option by name.
        compare_cpu: CPU request of the compare pod.
        compare_memory: Memory request and limit of the compare pod.
        compare_gpus: NVIDIA GPUs of the compare pod; empty: none.
        register_candidates: Also register every compared objective as a tagged version without an alias.
    """
    run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
    cleanup = _step(clean_up(target=deploy_target, state_dir=local_state_dir, run_id=run_id,
                             keep_serving=keep_serving), "clean up", image, heavy=False)
    with dsl.ExitHandler(cleanup, name="amopo"):
        annotated = _step(annotate_data(data_source=data_source, data_format=data_format, eval_source=eval_source,
                                        dimension=annotate_dimension, judge=judge, judge_model_name=judge_model_name,
                                        annotate_options=annotate_options), "annotate data", image)
        _with_secrets(annotated, ("amopo-judge", {"api-key": "AMOPO_JUDGE_API_KEY"}))
        prepared = _step(prepare_data(data_source=data_source, data_format=data_format, eval_source=eval_source,
                                      dimensions=dimensions, base_model=base_model, max_length=max_length,
                                      prepare_options=prepare_options, annotated=annotated.outputs["annotated"]),
                         "prepare data", image)
        plan = _step(plan_objectives(objectives=objectives, objective=objective, learning_rate=learning_rate,
                                     beta=beta, train_options=train_options), "plan objectives", image, heavy=False)
        with dsl.ParallelFor(plan.output, parallelism=PARALLEL_OBJECTIVES, name="objectives") as item:
            trained = _step(train_model(
                dataset=prepared.outputs["dataset"], base_model=base_model, objective=item.objective, beta=item.beta,
                gamma=gamma, learning_rate=item.learning_rate, max_steps=max_steps, batch_size=batch_size,
                gradient_accumulation_steps=gradient_accumulation_steps, max_length=max_length, heldout_max_pairs=heldout_max_pairs,
                train_options=item.train_options, mlflow_tracking_uri=mlflow_tracking_uri,
                mlflow_experiment=mlflow_experiment, launcher=launcher, num_processes=num_processes,
                num_nodes=num_nodes, gpus_per_node=gpus_per_node, accelerator_type=accelerator_type,
                fsdp_config=fsdp_config, image=image,
                namespace=namespace, workspace_pvc=workspace_pvc, node_selector=node_selector,
                tolerations=tolerations, timeout_minutes=train_timeout_minutes, training_runtime=training_runtime,
                queue_name=queue_name, cpu_per_node=trainjob_cpu, memory_per_node=trainjob_memory), "train", image)
            _with_secrets(trained)
            kubernetes.mount_pvc(trained, pvc_name=workspace_pvc, mount_path=STEP_WORKSPACE)
            _placed(_sized(trained, train_cpu, train_memory, train_gpus), node_selector, tolerations)

            evaluated = _step(evaluate_model(
                model=trained.outputs["model"], dataset=prepared.outputs["dataset"], judge=judge,
                judge_model_name=judge_model_name, dimensions=eval_dimensions,
                num_instructions=eval_num_instructions, max_new_tokens=eval_max_new_tokens,
                lm_eval_tasks=lm_eval_tasks, lm_eval_limit=lm_eval_limit, heldout_max_pairs=heldout_max_pairs,
                eval_options=eval_options,
                mlflow_tracking_uri=mlflow_tracking_uri), "evaluate", image)
            _with_secrets(evaluated, ("amopo-judge", {"api-key": "AMOPO_JUDGE_API_KEY"}))
            _placed(_sized(evaluated, eval_cpu, eval_memory, eval_gpus), node_selector, tolerations)

        compared = _step(compare_objectives(
            trainings=dsl.Collected(trained.outputs["model"]), evaluations=dsl.Collected(evaluated.outputs["results"]),
            labels=plan.output, metric=gate_metric, judge=judge, judge_model_name=judge_model_name,
            head_to_head=compare_head_to_head, head_to_head_instructions=compare_head_to_head_instructions,
            compare_options=compare_options, mlflow_tracking_uri=mlflow_tracking_uri,
            mlflow_experiment=mlflow_experiment), "compare objectives", image)
        _with_secrets(compared, ("amopo-judge", {"api-key": "AMOPO_JUDGE_API_KEY"}))
        _placed(_sized(compared, compare_cpu, compare_memory, compare_gpus), node_selector, tolerations)
        selected = _step(select_best(
            trainings=dsl.Collected(trained.outputs["model"]), evaluations=dsl.Collected(evaluated.outputs["results"]),
            labels=plan.output, best=compared.outputs["Output"], comparison=compared.outputs["comparison"]),
            "select best", image)
        candidates = _step(register_all_candidates(
            enabled=register_candidates, trainings=dsl.Collected(trained.outputs["model"]),
            evaluations=dsl.Collected(evaluated.outputs["results"]), labels=plan.output,
            comparison=compared.outputs["comparison"], registered_name=registered_model_name,
            mlflow_tracking_uri=mlflow_tracking_uri), "register candidates", image)
        _with_secrets(candidates)

        gate = _step(gate_model(results=selected.outputs["results"], gate_metric=gate_metric,
                                min_improvement=gate_min_improvement, thresholds=gate_thresholds,
                                against_base=gate_against_base), "gate", image, heavy=False)
        with dsl.If(gate.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 (a KFP condition)
            registered = _step(register_model(model=selected.outputs["model"], results=selected.outputs["results"],
                                              registered_name=registered_model_name,
                                              mlflow_tracking_uri=mlflow_tracking_uri, registry=registry,
                                              model_registry_url=model_registry_url, pipeline_run_id=run_id,
                                              pipeline_namespace=namespace), "register challenger", image)
            registered.after(candidates)   # so that the challenger reuses its candidate version
            _with_secrets(registered, _MODEL_REGISTRY_SECRET)
            deployed = _step(deploy_model(
                model_uri=registered.outputs["model_uri"], storage_uri=registered.outputs["storage_uri"],
                target=deploy_target, service_name=registered_model_name, mlflow_tracking_uri=mlflow_tracking_uri,
                namespace=serving_namespace, runtime=serving_runtime, image=image, gpus=serving_gpus,
                cpu=serving_cpu, memory=serving_memory,
                accelerator_type=accelerator_type, node_selector=node_selector, tolerations=tolerations,
                canary_traffic_percent=canary_traffic_percent, service_account=serving_service_account,
                state_dir=local_state_dir, run_id=run_id, timeout_minutes=deploy_timeout_minutes,
                queue_name=queue_name, registry=registry, model_registry_url=model_registry_url), "deploy", image)
            _with_secrets(deployed, _MODEL_REGISTRY_SECRET)
            smoked = _step(smoke_test_endpoint(url=deployed.outputs["url"], model_name=deployed.outputs["model_name"],
                                               prompt=smoke_prompt, model=selected.outputs["model"]), "smoke test",
                           image)
            kubernetes.use_secret_as_env(smoked, secret_name="amopo-serve", secret_key_to_env={"api-key": "AMOPO_SERVE_API_KEY"},
                                         optional=True)
            checked = _step(check_endpoint(url=deployed.outputs["url"], model_name=deployed.outputs["model_name"],
                                           model=selected.outputs["model"], tasks=endpoint_check_tasks,
                                           limit=endpoint_check_limit, tolerance=endpoint_check_tolerance),
                            "check endpoint against checkpoint", image)
            kubernetes.use_secret_as_env(checked, secret_name="amopo-serve",
                                         secret_key_to_env={"api-key": "AMOPO_SERVE_API_KEY"}, optional=True)
            _placed(_sized(checked, endpoint_check_cpu, endpoint_check_memory, endpoint_check_gpus), node_selector,
                    tolerations)
            promoted = _step(promote_model(registered_name=registered_model_name,
                                           version=registered.outputs["version"], gate_metric=gate_metric,
                                           min_improvement=gate_min_improvement, thresholds=gate_thresholds,
                                           mlflow_tracking_uri=mlflow_tracking_uri, registry=registry,
                                           model_registry_url=model_registry_url), "promote champion", image)
            promoted.after(smoked, checked)
            _with_secrets(promoted, _MODEL_REGISTRY_SECRET)
