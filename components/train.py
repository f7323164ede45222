"""Train: AMoPO or a baseline on the prepared data, here (1..N processes) or as a Kubeflow Trainer
TrainJob across nodes."""

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_model(dataset: dsl.Input[dsl.Dataset], base_model: str, objective: str, beta: float, gamma: float,
                learning_rate: float, max_steps: int, batch_size: int, gradient_accumulation_steps: int, max_length: int,
                heldout_max_pairs: int, train_options: dict, mlflow_tracking_uri: str, mlflow_experiment: str,
                launcher: str,
                num_processes: int, num_nodes: int, gpus_per_node: int, accelerator_type: str, fsdp_config: str,
                image: str,
                namespace: str, workspace_pvc: str, node_selector: dict, tolerations: list, training_runtime: str,
                queue_name: str, cpu_per_node: str, memory_per_node: str,
                timeout_minutes: int, model: dsl.Output[dsl.Model], metrics: dsl.Output[dsl.Metrics],
                curves: dsl.Output[dsl.HTML]) -> str:
    """Writes the training output folder (model/, metrics.json, train_config.yaml, history.jsonl,
    training_curves.png) as ``model``; logs held-out accuracy before/after to ``metrics``; returns
    the MLflow run id.

    launcher "local": ``num_processes`` processes in this container (torchrun when > 1).
    launcher "trainjob": a TrainJob of ``num_nodes`` × ``gpus_per_node`` (``num_processes`` on CPU
    nodes) in ``image``, each node requesting ``cpu_per_node`` and ``memory_per_node`` (also the limit),
    reading and writing the workspace PVC (mounted here at /workspace too), followed to its end; the
    output is copied back (amopo.cluster.launch_training).
    ``fsdp_config``: empty for data-parallel training, or an accelerate config YAML for FSDP2 sharding
    (`amopo train --fsdp-config`): the shipped configs/accelerate/fsdp.yaml is found from any folder,
    in a checkout or the image; a TrainJob takes only that file, from the trainer image.
    ``accelerator_type``: the GPU model the nodes must carry (the node label nvidia.com/gpu.product set
    by NVIDIA's GPU feature discovery, e.g. "NVIDIA-H100-80GB-HBM3"); empty = any.
    ``beta`` < 0: the objective's own default β (amopo.train.config.DEFAULT_BETA: 0.8 for amopo and
    simpo, 0.1 for dpo and modpo), so one pipeline value serves every objective of a comparison.
    ``heldout_max_pairs``: held-out pairs measured before and after training (0: all).
    ``train_options``: any other `amopo train` option by name (e.g. {"lora": true}).
    """
    import json
    import shutil
    from pathlib import Path

    from amopo.report_html import html_page

    options = {**train_options, "data": dataset.path, "base_model": base_model, "objective": objective,
               "beta": None if beta < 0 else beta, "gamma": gamma, "learning_rate": learning_rate, "max_steps": max_steps,
               "batch_size": batch_size, "gradient_accumulation_steps": gradient_accumulation_steps, "max_length": max_length,
               "heldout_max_pairs": heldout_max_pairs, "mlflow_experiment": mlflow_experiment,
               "mlflow_tracking_uri": mlflow_tracking_uri or None, "output": model.path}
    if launcher == "local":
        from amopo import config as config_lib
        from amopo.train.config import TrainConfig
        from amopo.train.launch import run_local

        if fsdp_config:
            options["fsdp_config"] = fsdp_config
        summary = run_local(config_lib.from_dict(TrainConfig, options, "train options"), num_processes)
    elif launcher == "trainjob":
        from amopo.cluster.launch_training import STEP_WORKSPACE, train_on_cluster, trainjob_settings

        summary = train_on_cluster(options, workspace=STEP_WORKSPACE, **trainjob_settings(
            image=image, namespace=namespace, workspace_pvc=workspace_pvc, num_nodes=num_nodes,
            gpus_per_node=gpus_per_node, num_processes=num_processes, fsdp_config=fsdp_config,
            node_selector=node_selector, accelerator_type=accelerator_type, tolerations=tolerations,
            timeout_minutes=timeout_minutes, training_runtime=training_runtime, queue_name=queue_name,
            cpu_per_node=cpu_per_node, memory_per_node=memory_per_node))
    else:
        raise ValueError(f"launcher must be 'local' or 'trainjob', got {launcher!r}")

    shutil.rmtree(Path(model.path) / "checkpoints", ignore_errors=True)   # resumable state is not the model
    for tag in ("base", "final"):
        for key, value in (summary.get(f"heldout_{tag}") or {}).items():
            metrics.log_metric(f"heldout_{tag}/{key}", float(value))
    model.metadata.update({"objective": objective, "base_model": base_model, "steps": summary.get("steps"),
                           "mlflow_run_id": summary.get("mlflow_run_id"), "framework": "transformers"})
    table = {"objective": objective, "base model": base_model, "steps": summary.get("steps"),
             "world size": summary.get("world_size"), "MLflow run": summary.get("mlflow_run_id")}
    for tag in ("base", "final"):
        held = summary.get(f"heldout_{tag}") or {}
        if "accuracy/mean_dimensions" in held:
            table[f"held-out accuracy ({tag})"] = held["accuracy/mean_dimensions"]
    Path(curves.path).write_text(html_page("Training", table=table,
                                           figures=[Path(model.path) / "training_curves.png"]))
    print(json.dumps({k: v for k, v in table.items()}, default=str))
    return summary.get("mlflow_run_id") or ""
