"""Kubernetes side of the pipeline: a Kubeflow Trainer ``TrainJob`` for multi-node training and a
KServe ``InferenceService`` for serving, as plain functions a KFP component can call.

    trainjob_manifest(...) -> dict          the TrainJob (torch-distributed runtime)
    run_trainjob(manifest, ...) -> dict     create it, print its pods' logs, wait for Complete/Failed
    inferenceservice_manifest(...) -> dict  the InferenceService (Hugging Face runtime or our image)
    deploy_inferenceservice(manifest, ...)  create or patch (canary), wait for Ready, return its URL
    load_kube_client()                      in-cluster service account, else kubeconfig

Failures raise :class:`ClusterError` (an AmopoError) naming the object and the controller's reason.
"""

from __future__ import annotations

from amopo.cluster.errors import ClusterError
from amopo.cluster.inferenceservice import deploy_inferenceservice, inferenceservice_manifest
from amopo.cluster.kube import load_kube_client
from amopo.cluster.run_trainjob import run_trainjob
from amopo.cluster.trainjob import launch_command, trainjob_manifest

__all__ = ["ClusterError", "deploy_inferenceservice", "inferenceservice_manifest", "launch_command",
           "load_kube_client", "run_trainjob", "trainjob_manifest"]
