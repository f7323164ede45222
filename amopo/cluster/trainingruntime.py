"""The project's Kubeflow Trainer ``ClusterTrainingRuntime`` (``amopo-torch``): what every amopo
TrainJob needs, set once on the platform instead of patched into each job.

    replicated job ``node``, container ``node`` (the names the torch runtimes use, so TrainJobs'
    runtimePatches apply unchanged); the amopo image; ``torchrun --module amopo train`` as the entry
    point (torchrun takes rendezvous and process counts from the PET_* variables the Trainer injects);
    the NCCL defaults of :data:`amopo.cluster.trainjob.NCCL_ENV`; an in-memory ``/dev/shm`` for NCCL;
    the shared workspace PVC at ``/workspace``.

``k8s/runtime/amopo-torch.yaml`` is :func:`training_runtime_manifest` rendered with the defaults
(tests/test_cluster_runtime.py keeps it fresh); a TrainJob uses it with ``runtime="amopo-torch"``.
"""

from __future__ import annotations

from amopo import IMAGE
from amopo.cluster.pod_parts import check_name, env_list, quantity
from amopo.cluster.trainjob import (GROUP, NCCL_ENV, SHM_VOLUME, TRAINER_CONTAINER, TRAINER_JOB, VERSION,
                                    WORKSPACE_VOLUME, launch_command)

KIND = "ClusterTrainingRuntime"
NAME = "amopo-torch"


def training_runtime_manifest(name: str = NAME, *, image: str = IMAGE, workspace_pvc: str = "amopo-workspace",
                              workspace_mount: str = "/workspace", shm_size: str = "16Gi") -> dict:
    """The ClusterTrainingRuntime as a JSON-ready dict (validates against the Trainer CRD's schema)."""
    check_name(name, KIND)
    where = f"{KIND} {name}"
    container = {
        "name": TRAINER_CONTAINER,
        "image": image,
        "command": launch_command(),
        "env": env_list(NCCL_ENV, None, where),
        "volumeMounts": [{"name": WORKSPACE_VOLUME, "mountPath": workspace_mount},
                         {"name": SHM_VOLUME, "mountPath": "/dev/shm"}],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                            "allowPrivilegeEscalation": False},
    }
    pod = {
        "containers": [container],
        "volumes": [{"name": WORKSPACE_VOLUME, "persistentVolumeClaim": {"claimName": workspace_pvc}},
                    {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory",
                                                      "sizeLimit": quantity(shm_size, f"{where}.shm_size")}}],
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "labels": {"trainer.kubeflow.org/framework": "torch",
                                              "app.kubernetes.io/name": "amopo",
                                              "app.kubernetes.io/component": "train"}},
        "spec": {
            "mlPolicy": {"numNodes": 1, "torch": {}},
            "template": {"spec": {"replicatedJobs": [{
                "name": TRAINER_JOB,
                "template": {
                    "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                    "spec": {"template": {"spec": pod}},
                },
            }]}},
        },
    }
