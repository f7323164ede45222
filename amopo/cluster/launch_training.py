"""Train on the cluster from a pipeline step: stage the inputs on the shared workspace volume, run a
TrainJob over them, copy the trained model back.

The step's own files (the prepared data artifact, the output artifact) live where KFP put them,
which the TrainJob's pods cannot see. The workspace PVC is mounted both in the step's pod and on
every node of the job, so it is the meeting point:

    WORKSPACE/runs/JOB/data/               copy of the prepared data
    WORKSPACE/runs/JOB/base/               copy of the base model, when it is a local folder
    WORKSPACE/runs/JOB/train_config.yaml   the resolved `amopo train` config, paths rewritten
    WORKSPACE/runs/JOB/train/              the job's output (model/, metrics.json, curves, ...)

and ``train/`` (without checkpoints) is copied to the step's output folder when the job completes.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Callable

from amopo import config as config_lib
from amopo.cluster.errors import ClusterError
from amopo.cluster.run_trainjob import run_trainjob
from amopo.cluster.trainjob import DEFAULT_RUNTIME, check_distributed, distributed_for, trainjob_manifest

# Variables every trainer pod takes from optional Secrets (MLflow basic auth, S3 artifact store).
SECRET_ENV = {
    "MLFLOW_TRACKING_USERNAME": "amopo-mlflow-auth/MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD": "amopo-mlflow-auth/MLFLOW_TRACKING_PASSWORD",
    "AWS_ACCESS_KEY_ID": "amopo-s3/AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "amopo-s3/AWS_SECRET_ACCESS_KEY",
    "MLFLOW_S3_ENDPOINT_URL": "amopo-s3/MLFLOW_S3_ENDPOINT_URL",
}


def new_job_name(prefix: str = "amopo-train") -> str:
    """A fresh DNS-1035 TrainJob name, e.g. ``amopo-train-3f9c2a1b``."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def staged_config_file(workspace: str | Path, job_name: str) -> Path:
    """Where the resolved `amopo train` config of TrainJob ``job_name`` is staged: WORKSPACE/runs/JOB/."""
    return Path(workspace) / "runs" / job_name / "train_config.yaml"


def _copy_tree(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a temporary sibling, so ``dst`` is either absent or complete."""
    tmp = dst.with_name(f".{dst.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)


def stage_inputs(options: dict, run_dir: Path) -> dict:
    """Copy the data (and a local base model) under ``run_dir``; the options with paths rewritten.

    ``options`` are `amopo train` options as the step holds them (``data``, ``base_model``, ``output``
    are the step's own paths). A base model given by hub id or as ``embedded:...`` is left as it is:
    every pod resolves it itself.
    """
    data = Path(options["data"])
    if not (data / "prepare.json").is_file():
        raise ClusterError(f"{data}: not a prepared data folder (no prepare.json)")
    run_dir.mkdir(parents=True, exist_ok=True)
    staged = dict(options)
    _copy_tree(data, run_dir / "data")
    staged["data"] = str(run_dir / "data")
    model = str(options["base_model"])
    if not model.startswith("embedded:") and Path(model).is_dir():
        _copy_tree(Path(model), run_dir / "base")
        staged["base_model"] = str(run_dir / "base")
    staged["output"] = str(run_dir / "train")
    return staged


def collect_output(run_dir: Path, output: Path) -> dict:
    """Copy the job's output folder (without resumable checkpoints) to ``output``; its summary."""
    source = run_dir / "train"
    summary_file = source / "metrics.json"
    if not summary_file.is_file():
        raise ClusterError(f"the TrainJob completed but wrote no {summary_file}; its pods' logs say why")
    output.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name == "checkpoints":
            continue
        target = output / item.name
        if item.is_dir():
            _copy_tree(item, target)
        else:
            shutil.copy2(item, target)
    return json.loads(summary_file.read_text(encoding="utf-8"))


# Where the train step mounts the workspace PVC (the pipeline mounts it there; TrainJob pods too).
STEP_WORKSPACE = "/workspace"


def trainjob_settings(*, image: str, namespace: str, workspace_pvc: str, num_nodes: int, gpus_per_node: int,
                      num_processes: int, fsdp_config: str, node_selector: dict, accelerator_type: str,
                      tolerations: list, timeout_minutes: int, training_runtime: str, queue_name: str,
                      cpu_per_node: str, memory_per_node: str) -> dict:
    """The train step's inputs (named as the component names them) as :func:`train_on_cluster`'s
    keyword arguments: the one mapping the step and `amopo pipeline submit --dry-run` share.

    ``num_processes`` is the processes per CPU node; ``fsdp_config`` picks DDP or FSDP
    (:func:`amopo.cluster.trainjob.distributed_for`); ``accelerator_type`` adds the GPU-product node
    label; an empty ``queue_name`` is no queue.
    """
    from amopo.cluster.pod_parts import with_accelerator

    return dict(image=image, namespace=namespace, workspace_pvc=workspace_pvc, num_nodes=num_nodes,
                gpus_per_node=gpus_per_node, procs_per_node=num_processes, distributed=distributed_for(fsdp_config),
                node_selector=with_accelerator(node_selector, accelerator_type), tolerations=tolerations,
                timeout_s=timeout_minutes * 60.0, runtime=training_runtime, queue_name=queue_name or None,
                cpu=cpu_per_node, memory=memory_per_node)


def step_trainjob(name: str, config_file: str | Path, *, workspace: str, image: str, namespace: str,
                  workspace_pvc: str, num_nodes: int = 1, gpus_per_node: int = 0, procs_per_node: int = 1,
                  distributed: str = "ddp", node_selector: dict | None = None, tolerations: list | None = None,
                  timeout_s: float = 24 * 3600.0, cpu: str = "4", memory: str = "16Gi",
                  runtime: str = DEFAULT_RUNTIME, queue_name: str | None = None) -> dict:
    """The TrainJob :func:`train_on_cluster` creates to run the config staged at ``config_file``.

    Every pod mounts ``workspace_pvc`` at ``workspace`` and takes the MLflow and S3 credentials from
    the optional Secrets of :data:`SECRET_ENV`; GPU pods get an in-memory /dev/shm, CPU pods one
    OpenMP thread per process.
    """
    return trainjob_manifest(
        name, namespace, image, ["--config", str(config_file)], num_nodes=num_nodes, gpus_per_node=gpus_per_node,
        procs_per_node=procs_per_node, cpu=cpu, memory=memory, distributed=distributed,
        env={"OMP_NUM_THREADS": "1"} if not gpus_per_node else None, secret_env=SECRET_ENV,
        optional_secrets=True, node_selector=node_selector, tolerations=tolerations, workspace_pvc=workspace_pvc,
        workspace_mount=workspace, shm_size="16Gi" if gpus_per_node else None,
        active_deadline_s=max(1, int(timeout_s)), runtime=runtime, queue_name=queue_name)


def train_on_cluster(options: dict, *, workspace: str, image: str, namespace: str, workspace_pvc: str,
                     num_nodes: int = 1, gpus_per_node: int = 0, procs_per_node: int = 1,
                     distributed: str = "ddp", node_selector: dict | None = None, tolerations: list | None = None, timeout_s: float = 24 * 3600.0, cpu: str = "4",
                     memory: str = "16Gi", job_name: str | None = None, runtime: str = DEFAULT_RUNTIME,
                     queue_name: str | None = None, api_client=None,
                     poll_s: float = 10.0, log: Callable[[str], None] = print) -> dict:
    """Run `amopo train` with ``options`` as a TrainJob of ``num_nodes`` pods; returns its summary.

    The options are checked as a TrainConfig before anything is copied or created. The job needs an
    MLflow server its pods can reach (``mlflow_tracking_uri`` http(s)://): a sqlite file in one pod
    would be lost with it. ``distributed``: ``ddp`` | ``fsdp`` (the pods shard with the image's
    ``configs/accelerate/fsdp.yaml``; :func:`trainjob_settings` maps the step's ``fsdp_config`` to it), so
    the options may not name an FSDP config themselves. GPU pods get an in-memory /dev/shm and the NCCL
    defaults of :data:`amopo.cluster.trainjob.NCCL_ENV`; the collective timeout is the option
    ``dist_timeout_s``, apart from ``timeout_s`` for the whole job. The output lands in
    ``options["output"]``; the staged folder ``WORKSPACE/runs/JOB`` stays for inspection (delete it
    when done). ``runtime``: the ClusterTrainingRuntime (Kubeflow's ``torch-distributed``, or the
    project's ``amopo-torch`` from k8s/runtime/); ``queue_name``: the Kueue LocalQueue that admits the
    job. Raises ClusterError.
    """
    from amopo.train.config import TrainConfig

    cfg = config_lib.from_dict(TrainConfig, options, "train options")
    cfg.validate()
    if cfg.fsdp_config:
        raise ClusterError(f"train option fsdp_config={cfg.fsdp_config!r}: a TrainJob takes it from the train "
                           "step's fsdp_config parameter, not from train_options")
    check_distributed(distributed, "distributed")
    uri = cfg.mlflow_tracking_uri or ""
    if not uri.startswith(("http://", "https://", "databricks")):
        raise ClusterError("launcher 'trainjob' needs mlflow_tracking_uri set to an MLflow server every pod can "
                           f"reach (e.g. http://amopo-mlflow.amopo:5000), got {uri or 'none'!r}")
    if not image:
        raise ClusterError("launcher 'trainjob' needs the image the trainer pods run (the amopo image)")
    name = job_name or new_job_name()
    config_file = staged_config_file(workspace, name)
    run_dir = config_file.parent
    staged = stage_inputs(config_lib.to_dict(cfg), run_dir)
    config_file.write_text(config_lib.dump_yaml(config_lib.from_dict(TrainConfig, staged, "train options")),
                           encoding="utf-8")
    manifest = step_trainjob(
        name, config_file, workspace=workspace, image=image, namespace=namespace, workspace_pvc=workspace_pvc,
        num_nodes=num_nodes, gpus_per_node=gpus_per_node, procs_per_node=procs_per_node,
        distributed=distributed, node_selector=node_selector, tolerations=tolerations,
        timeout_s=timeout_s, cpu=cpu, memory=memory, runtime=runtime, queue_name=queue_name)
    log(f"TrainJob {namespace}/{name}: {num_nodes} node(s) × {gpus_per_node or procs_per_node} process(es), "
        f"{distributed}; staged under {run_dir}")
    run_trainjob(manifest, api_client=api_client, timeout_s=timeout_s, poll_s=poll_s, log=log)
    return collect_output(run_dir, Path(options["output"]))
