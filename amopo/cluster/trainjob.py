"""A Kubeflow Trainer v2 ``TrainJob`` (trainer.kubeflow.org/v1alpha1) that runs ``amopo train`` on N nodes.

How the job starts on each node. The ``torch-distributed`` ClusterTrainingRuntime runs one pod per
node (replicated job ``node``, container ``node``) and injects PET_NNODES, PET_NPROC_PER_NODE,
PET_NODE_RANK, PET_MASTER_ADDR and PET_MASTER_PORT. torchrun reads ``PET_<OPTION>`` as the default of
each of its options, so a bare ``torchrun --module amopo train ...`` joins the right rendezvous with
no flags; inside, ``accelerate.Accelerator()`` picks up RANK/WORLD_SIZE from torchrun (DDP; gloo on
CPU, NCCL on GPU). FSDP and DeepSpeed need accelerate's config file, which only ``accelerate
launch`` turns into settings, so those use ``accelerate launch --config_file FILE`` with the node
count and process count written in and rank, address and port taken from the PET_* variables
through Kubernetes' ``$(VAR)`` expansion of container commands. (``accelerate launch --cpu
--num_processes N`` starts a single process with accelerate 1.15, so CPU jobs always use torchrun.)

Pod customisation (node selector, tolerations, workspace volume, service account, pull secrets)
goes into ``spec.runtimePatches`` (Trainer >= 2.2; it replaced ``podTemplateOverrides``), which may
patch only the fields its schema lists.
"""

from __future__ import annotations

import posixpath

from amopo.cluster.errors import ClusterError
from amopo.cluster.pod_parts import check_name, env_list, node_selector_map, quantity, resources, tolerations_list

GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
DEFAULT_RUNTIME = "torch-distributed"
# The replicated job and its container in the torch runtimes Kubeflow Trainer ships.
TRAINER_JOB = "node"
TRAINER_CONTAINER = "node"
PATCH_MANAGER = "amopo"
WORKSPACE_VOLUME = "workspace"
SHM_VOLUME = "dshm"
DISTRIBUTED = ("ddp", "fsdp", "deepspeed")
# Files under configs/accelerate/ (shipped in the image) per strategy: (one node, several nodes).
ACCELERATE_CONFIGS = {
    "fsdp": ("multi_gpu_fsdp.yaml", "multi_node_fsdp.yaml"),
    "deepspeed": ("deepspeed_zero3.yaml", "deepspeed_zero3.yaml"),
}


def accelerate_config_file(distributed: str, num_nodes: int, config_dir: str = "configs/accelerate") -> str | None:
    """Path (in the image) of the accelerate config for ``distributed``; None for ``ddp`` (plain torchrun)."""
    if distributed not in DISTRIBUTED:
        raise ClusterError(f"TrainJob: distributed '{distributed}' is not one of {', '.join(DISTRIBUTED)}")
    if distributed == "ddp":
        return None
    single, multi = ACCELERATE_CONFIGS[distributed]
    return posixpath.join(config_dir, multi if num_nodes > 1 else single)


def launch_command(*, distributed: str = "ddp", num_nodes: int = 1, procs_per_node: int = 1,
                   accelerate_config_dir: str = "configs/accelerate") -> list[str]:
    """The container command up to and including ``amopo train`` (its flags go in ``args``).

    ``ddp``: ``torchrun --module amopo train`` (all rendezvous settings from PET_*).
    ``fsdp`` / ``deepspeed``: ``accelerate launch --config_file ... --module amopo train`` with
    ``--num_machines``/``--num_processes`` fixed here and ``--machine_rank $(PET_NODE_RANK)``,
    ``--main_process_ip $(PET_MASTER_ADDR)``, ``--main_process_port $(PET_MASTER_PORT)`` expanded by
    the kubelet. Multi-node DeepSpeed uses ``--deepspeed_multinode_launcher standalone`` (torchrun
    on every node) instead of DeepSpeed's default pdsh, which needs ssh between pods.
    """
    config_file = accelerate_config_file(distributed, num_nodes, accelerate_config_dir)
    if config_file is None:
        return ["torchrun", "--module", "amopo", "train"]
    cmd = ["accelerate", "launch", "--config_file", config_file,
           "--num_machines", str(num_nodes), "--num_processes", str(num_nodes * procs_per_node),
           "--machine_rank", "$(PET_NODE_RANK)", "--main_process_ip", "$(PET_MASTER_ADDR)",
           "--main_process_port", "$(PET_MASTER_PORT)"]
    if distributed == "deepspeed" and num_nodes > 1:
        cmd += ["--deepspeed_multinode_launcher", "standalone"]
    return cmd + ["--module", "amopo", "train"]


def trainjob_manifest(name: str, namespace: str, image: str, train_args: list[str], *,
                      num_nodes: int = 1, gpus_per_node: int = 0, procs_per_node: int = 1,
                      cpu: str = "4", memory: str = "16Gi", runtime: str = DEFAULT_RUNTIME,
                      distributed: str = "ddp", accelerate_config_dir: str = "configs/accelerate",
                      env: dict[str, str] | None = None, secret_env: dict[str, str] | None = None,
                      optional_secrets: bool = False,
                      node_selector: dict[str, str] | None = None, tolerations: list[dict] | None = None,
                      workspace_pvc: str | None = None, workspace_mount: str = "/workspace",
                      service_account: str | None = None, image_pull_secrets: list[str] | None = None,
                      shm_size: str | None = None, active_deadline_s: int | None = None,
                      labels: dict[str, str] | None = None) -> dict:
    """The TrainJob as a JSON-ready dict (validates against the Trainer CRD's openAPIV3Schema).

    name, namespace     metadata; ``name`` must be a DNS-1035 label (the CRD's rule).
    image               the amopo image; it must hold ``configs/accelerate/`` for fsdp/deepspeed.
    train_args          the flags after ``amopo train``, e.g. ``["--data", "/workspace/data", "--model",
                        "/workspace/base", "--output", "/workspace/train", "--max-steps", "100"]``.
    num_nodes           pods (``spec.trainer.numNodes``).
    gpus_per_node       ``nvidia.com/gpu`` limit per pod; also the processes per node. 0 = CPU nodes,
                        then ``procs_per_node`` processes (gloo) and only ``ddp`` is allowed.
    cpu, memory         requests per pod (memory is also the limit).
    runtime             ClusterTrainingRuntime to use (``spec.runtimeRef``).
    distributed         ``ddp`` (torchrun) | ``fsdp`` | ``deepspeed`` (accelerate launch + a file from
                        ``accelerate_config_dir``); see :func:`launch_command`.
    env                 plain variables, NAME → value (e.g. MLFLOW_TRACKING_URI).
    secret_env          NAME → ``"SECRET/KEY"``: taken from a Secret by the kubelet; values never pass here.
    optional_secrets    a missing Secret or key leaves its variable unset rather than blocking the pods.
    node_selector, tolerations   where the pods may run (pod spec, through ``spec.runtimePatches``).
    workspace_pvc       a ReadWriteMany PVC mounted at ``workspace_mount`` on every node, holding data,
                        base model and output, so every rank sees the same files.
    service_account, image_pull_secrets, shm_size (an in-memory /dev/shm for NCCL and data loaders),
    active_deadline_s (``spec.activeDeadlineSeconds``), labels (extra TrainJob labels).
    Raises ClusterError on any invalid value, naming it.
    """
    check_name(name, "TrainJob")
    where = f"TrainJob {namespace}/{name}"
    if not isinstance(num_nodes, int) or num_nodes < 1:
        raise ClusterError(f"{where}: num_nodes must be an integer >= 1, got {num_nodes!r}")
    if not isinstance(procs_per_node, int) or procs_per_node < 1:
        raise ClusterError(f"{where}: procs_per_node must be an integer >= 1, got {procs_per_node!r}")
    if not image:
        raise ClusterError(f"{where}: image is required")
    args = [str(a) for a in train_args]
    if args and args[0] in ("amopo", "train"):
        raise ClusterError(f"{where}: train_args are the flags after `amopo train`; drop the leading '{args[0]}'")
    res = resources(cpu=cpu, memory=memory, gpus=gpus_per_node, where=where)
    if distributed not in DISTRIBUTED:
        raise ClusterError(f"{where}: distributed '{distributed}' is not one of {', '.join(DISTRIBUTED)}")
    if gpus_per_node == 0 and distributed != "ddp":
        raise ClusterError(f"{where}: distributed '{distributed}' needs GPUs; CPU nodes (gpus_per_node=0) use 'ddp'")
    nproc = gpus_per_node or procs_per_node

    trainer = {
        "image": image,
        "command": launch_command(distributed=distributed, num_nodes=num_nodes, procs_per_node=nproc,
                                  accelerate_config_dir=accelerate_config_dir),
        "args": args,
        "numNodes": num_nodes,
        "numProcPerNode": nproc,
        "resourcesPerNode": res,
    }
    env_items = env_list(env, secret_env, where, optional_secrets=optional_secrets)
    if env_items:
        trainer["env"] = env_items

    pod_spec: dict = {}
    container: dict = {"name": TRAINER_CONTAINER}
    volumes, mounts = [], []
    if workspace_pvc:
        volumes.append({"name": WORKSPACE_VOLUME, "persistentVolumeClaim": {"claimName": workspace_pvc}})
        mounts.append({"name": WORKSPACE_VOLUME, "mountPath": workspace_mount})
    if shm_size:
        volumes.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory",
                                                         "sizeLimit": quantity(shm_size, f"{where}.shm_size")}})
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    if volumes:
        pod_spec["volumes"] = volumes
        container["volumeMounts"] = mounts
        pod_spec["containers"] = [container]
    if node_selector:
        pod_spec["nodeSelector"] = node_selector_map(node_selector, where)
    if tolerations:
        pod_spec["tolerations"] = tolerations_list(tolerations, where)
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    if image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in image_pull_secrets]

    spec: dict = {
        "runtimeRef": {"name": runtime, "apiGroup": GROUP, "kind": "ClusterTrainingRuntime"},
        "trainer": trainer,
    }
    if pod_spec:
        spec["runtimePatches"] = [{
            "manager": PATCH_MANAGER,
            "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [{
                "name": TRAINER_JOB,
                "template": {"spec": {"template": {"spec": pod_spec}}},
            }]}}},
        }]
    if active_deadline_s is not None:
        if not isinstance(active_deadline_s, int) or active_deadline_s < 1:
            raise ClusterError(f"{where}: active_deadline_s must be an integer >= 1, got {active_deadline_s!r}")
        spec["activeDeadlineSeconds"] = active_deadline_s
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "amopo", "app.kubernetes.io/component": "train",
                                **(labels or {})}},
        "spec": spec,
    }
