"""A Kubeflow Trainer v2 ``TrainJob`` (trainer.kubeflow.org/v1alpha1) that runs ``amopo train`` on N nodes.

How the job starts on each node. The ``torch-distributed`` ClusterTrainingRuntime runs one pod per
node (replicated job ``node``, container ``node``) and injects PET_NNODES, PET_NPROC_PER_NODE,
PET_NODE_RANK, PET_MASTER_ADDR and PET_MASTER_PORT. torchrun reads ``PET_<OPTION>`` as the default of
each of its options, so every job, DDP or FSDP on one node or many, runs the same bare
``torchrun --module amopo train ...`` and joins the right rendezvous with no flags; inside,
``accelerate.Accelerator()`` picks up RANK/WORLD_SIZE from torchrun (gloo on CPU, NCCL on GPU).
FSDP2 is one more flag, ``--fsdp-config`` with the shipped ``configs/accelerate/fsdp.yaml`` where the
image holds it: ``amopo train`` builds the sharding plugin itself, so no ``accelerate launch`` and no
per-job settings in the command. GPU jobs get NCCL defaults (:data:`NCCL_ENV`) a caller may override.

Pod customisation (node selector, tolerations, workspace volume, service account, pull secrets)
goes into ``spec.runtimePatches`` (Trainer >= 2.2; it replaced ``podTemplateOverrides``), which may
patch only the fields its schema lists.
"""

from __future__ import annotations

import posixpath

from amopo.cluster.errors import ClusterError
from amopo.cluster.pod_parts import (check_name, env_list, node_selector_map, quantity, queue_labels, resources,
                                     tolerations_list)
from amopo.train.shipped import FSDP_CONFIG

GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
DEFAULT_RUNTIME = "torch-distributed"
# The replicated job and its container in the torch runtimes Kubeflow Trainer ships.
TRAINER_JOB = "node"
TRAINER_CONTAINER = "node"
PATCH_MANAGER = "amopo"
WORKSPACE_VOLUME = "workspace"
SHM_VOLUME = "dshm"
DISTRIBUTED = ("ddp", "fsdp")
# Where the image holds the project (the Dockerfile's WORKDIR for its COPY lines, installed editable).
IMAGE_PROJECT_DIR = "/opt/amopo"
FSDP_FLAG = "--fsdp-config"
# Set on the trainer of every GPU TrainJob; a caller's ``env`` wins over each of them.
NCCL_ENV = {
    # A rank whose collective fails or times out (TrainConfig.dist_timeout_s) aborts its NCCL
    # communicators and exits, so torchrun and the JobSet end the job instead of the other ranks
    # hanging until activeDeadlineSeconds.
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    # NCCL's warnings and errors (failed peers, transports, timeouts) in the pods' logs, without INFO noise.
    "NCCL_DEBUG": "WARN",
}


def check_distributed(distributed: str, what: str = "TrainJob distributed") -> str:
    """``distributed`` itself when it is ``ddp`` or ``fsdp``; otherwise ClusterError naming ``what`` and why."""
    if distributed == "deepspeed":
        raise ClusterError(f"{what} 'deepspeed' is not supported: DeepSpeed is not part of the image and has "
                           "never been run by the project's tests; use 'fsdp' for sharding")
    if distributed not in DISTRIBUTED:
        raise ClusterError(f"{what} '{distributed}' is not one of {', '.join(DISTRIBUTED)}")
    return distributed


def distributed_for(fsdp_config: str, what: str = "fsdp_config") -> str:
    """``ddp`` for an empty ``fsdp_config``, ``fsdp`` for the shipped ``configs/accelerate/fsdp.yaml``
    (relative, or under the image's project folder); ClusterError naming ``what`` for any other file,
    which the image is not known to hold."""
    if not fsdp_config:
        return "ddp"
    path = posixpath.normpath(fsdp_config)
    if path in (FSDP_CONFIG, posixpath.join(IMAGE_PROJECT_DIR, FSDP_CONFIG)):
        return "fsdp"
    raise ClusterError(f"{what} {fsdp_config!r}: a TrainJob shards with the image's {FSDP_CONFIG}, the one "
                       f"accelerate config the image holds; set {what} to {FSDP_CONFIG!r} (or empty for DDP)")


def accelerate_config_file(distributed: str) -> str | None:
    """Absolute path, in the image, of the ``--fsdp-config`` file for ``distributed``; None for ``ddp``."""
    if check_distributed(distributed) == "ddp":
        return None
    return posixpath.join(IMAGE_PROJECT_DIR, FSDP_CONFIG)


def launch_command(*, distributed: str = "ddp") -> list[str]:
    """The container command up to and including ``amopo train`` (its flags go in ``args``).

    The same for every strategy and size: ``torchrun --module amopo train``, with all rendezvous
    settings from PET_*; ``distributed`` is only checked here (fsdp's flag is an arg).
    """
    check_distributed(distributed)
    return ["torchrun", "--module", "amopo", "train"]


def launch_args(train_args: list, distributed: str, where: str) -> list[str]:
    """``train_args`` as strings, with ``--fsdp-config IMAGE_FILE`` appended for ``fsdp``.

    ``distributed`` alone decides sharding, so ``train_args`` may not carry ``--fsdp-config``.
    """
    args = [str(a) for a in train_args]
    if args and args[0] in ("amopo", "train"):
        raise ClusterError(f"{where}: train_args are the flags after `amopo train`; drop the leading '{args[0]}'")
    if any(a == FSDP_FLAG or a.startswith(f"{FSDP_FLAG}=") for a in args):
        raise ClusterError(f"{where}: train_args may not set {FSDP_FLAG}; choose distributed='fsdp' instead")
    config_file = accelerate_config_file(distributed)
    return args + [FSDP_FLAG, config_file] if config_file else args


def trainer_env(env: dict[str, str] | None, secret_env: dict[str, str] | None, gpus_per_node: int) -> dict:
    """The plain variables of the trainer: :data:`NCCL_ENV` on GPU nodes, then ``env`` over it.

    A default is also dropped when ``secret_env`` sets the same name (the caller's choice).
    """
    defaults = NCCL_ENV if gpus_per_node else {}
    return {**{k: v for k, v in defaults.items() if k not in (secret_env or {})}, **(env or {})}


def trainjob_manifest(name: str, namespace: str, image: str, train_args: list[str], *,
                      num_nodes: int = 1, gpus_per_node: int = 0, procs_per_node: int = 1,
                      cpu: str = "4", memory: str = "16Gi", runtime: str = DEFAULT_RUNTIME,
                      distributed: str = "ddp",
                      env: dict[str, str] | None = None, secret_env: dict[str, str] | None = None,
                      optional_secrets: bool = False,
                      node_selector: dict[str, str] | None = None, tolerations: list[dict] | None = None,
                      workspace_pvc: str | None = None, workspace_mount: str = "/workspace",
                      service_account: str | None = None, image_pull_secrets: list[str] | None = None,
                      shm_size: str | None = None, active_deadline_s: int | None = None,
                      labels: dict[str, str] | None = None, queue_name: str | None = None) -> dict:
    """The TrainJob as a JSON-ready dict (validates against the Trainer CRD's openAPIV3Schema).

    name, namespace     metadata; ``name`` must be a DNS-1035 label (the CRD's rule).
    image               the amopo image (built from the project's Dockerfile: the project in /opt/amopo).
    train_args          the flags after ``amopo train``, e.g. ``["--data", "/workspace/data", "--base-model",
                        "/workspace/base", "--output", "/workspace/train", "--max-steps", "100"]``.
    num_nodes           pods (``spec.trainer.numNodes``).
    gpus_per_node       ``nvidia.com/gpu`` limit per pod; also the processes per node. 0 = CPU nodes,
                        then ``procs_per_node`` processes (gloo).
    cpu, memory         requests per pod (memory is also the limit).
    runtime             ClusterTrainingRuntime to use (``spec.runtimeRef``).
    distributed         ``ddp`` | ``fsdp`` (``--fsdp-config`` with the image's ``configs/accelerate/fsdp.yaml``
                        appended to the args); both run :func:`launch_command`. ``deepspeed`` is refused.
    env                 plain variables, NAME → value (e.g. MLFLOW_TRACKING_URI); on GPU nodes over
                        :data:`NCCL_ENV`.
    secret_env          NAME → ``"SECRET/KEY"``: taken from a Secret by the kubelet; values never pass here.
    optional_secrets    a missing Secret or key leaves its variable unset rather than blocking the pods.
    node_selector, tolerations   where the pods may run (pod spec, through ``spec.runtimePatches``).
    workspace_pvc       a ReadWriteMany PVC mounted at ``workspace_mount`` on every node, holding data,
                        base model and output, so every rank sees the same files.
    service_account, image_pull_secrets, shm_size (an in-memory /dev/shm for NCCL and data loaders),
    active_deadline_s (``spec.activeDeadlineSeconds``), labels (extra TrainJob labels).
    queue_name          the Kueue LocalQueue that admits the job (label kueue.x-k8s.io/queue-name); a
                        job without it is not admitted through the team's quota.
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
    check_distributed(distributed, f"{where}: distributed")
    args = launch_args(train_args, distributed, where)
    res = resources(cpu=cpu, memory=memory, gpus=gpus_per_node, where=where)
    nproc = gpus_per_node or procs_per_node

    trainer = {
        "image": image,
        "command": launch_command(distributed=distributed),
        "args": args,
        "numNodes": num_nodes,
        "numProcPerNode": nproc,
        "resourcesPerNode": res,
    }
    env_items = env_list(trainer_env(env, secret_env, gpus_per_node), secret_env, where,
                         optional_secrets=optional_secrets)
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
                                **(labels or {}), **queue_labels(queue_name, where)}},
        "spec": spec,
    }
