"""The amopo ClusterTrainingRuntime: shipped YAML kept fresh, valid against the Trainer's CRD
schema, and usable by TrainJobs (runtimeRef) with the patches they send."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from amopo.cluster.trainingruntime import NAME, training_runtime_manifest
from amopo.cluster.trainjob import NCCL_ENV, launch_command, trainjob_manifest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "k8s" / "runtime" / "amopo-torch.yaml"
CRDS = ROOT.parent / "shared" / "crds"
RUNTIME_CRD = CRDS / "trainer.kubeflow.org_clustertrainingruntimes.yaml"
TRAINJOB_CRD = CRDS / "trainer.kubeflow.org_trainjobs.yaml"
needs_crds = pytest.mark.skipif(not RUNTIME_CRD.is_file(),
                                reason=f"CRD schemas not found at {CRDS} (../shared is only beside the project in CI)")


def test_the_shipped_runtime_is_the_rendered_one():
    assert yaml.safe_load(SHIPPED.read_text()) == training_runtime_manifest(), \
        "k8s/runtime/amopo-torch.yaml is stale: re-render it from training_runtime_manifest()"


def test_the_runtime_carries_entry_point_nccl_shm_and_workspace():
    runtime = training_runtime_manifest()
    (job,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    pod = job["template"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert (job["name"], container["name"]) == ("node", "node")
    assert container["command"] == launch_command()
    assert {e["name"]: e["value"] for e in container["env"]} == NCCL_ENV
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert volumes["workspace"]["persistentVolumeClaim"]["claimName"] == "amopo-workspace"
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/dev/shm", "/workspace"}
    assert runtime["metadata"]["labels"]["trainer.kubeflow.org/framework"] == "torch"


@needs_crds
def test_the_runtime_validates_against_the_crd():
    from amopo.cluster.crd_schema import validation_errors

    assert validation_errors(training_runtime_manifest(), RUNTIME_CRD) == []
    broken = training_runtime_manifest()
    broken["spec"]["mlPolicy"]["numNodes"] = "one"
    assert validation_errors(broken, RUNTIME_CRD)


@needs_crds
def test_a_trainjob_on_the_amopo_runtime_with_a_kueue_queue_validates():
    from amopo.cluster.crd_schema import validation_errors

    job = trainjob_manifest("amopo-train-1", "amopo", "img", ["--config", "/workspace/c.yaml"], runtime=NAME,
                            gpus_per_node=8, num_nodes=2, distributed="fsdp", queue_name="team-a")
    assert job["spec"]["runtimeRef"]["name"] == NAME
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert validation_errors(job, TRAINJOB_CRD) == []


ISVC_CRD = CRDS / "serving.kserve.io_inferenceservices.yaml"


@needs_crds
def test_an_inferenceservice_with_a_kueue_queue_validates():
    from amopo.cluster.crd_schema import validation_errors
    from amopo.cluster.inferenceservice import inferenceservice_manifest

    isvc = inferenceservice_manifest("amopo-serve", "amopo", "s3://models/amopo/1", queue_name="team-a")
    assert isvc["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert validation_errors(isvc, ISVC_CRD) == []


def test_without_a_queue_there_is_no_kueue_label():
    from amopo.cluster.inferenceservice import inferenceservice_manifest

    job = trainjob_manifest("amopo-train-1", "amopo", "img", [])
    isvc = inferenceservice_manifest("amopo-serve", "amopo", "s3://m")
    assert "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]
    assert "kueue.x-k8s.io/queue-name" not in isvc["metadata"]["labels"]


@pytest.mark.parametrize("bad", ["Team A", "-team", "a" * 64, "team/a"])
def test_a_queue_name_that_is_no_label_value_is_refused(bad):
    from amopo.cluster.errors import ClusterError

    with pytest.raises(ClusterError, match="queue_name .* is not a valid Kubernetes label value"):
        trainjob_manifest("amopo-train-1", "amopo", "img", [], queue_name=bad)
