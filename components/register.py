"""Register: the trained model and its evaluation in the MLflow Model Registry, alias "challenger"."""

from typing import List, NamedTuple

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register_model(model: dsl.Input[dsl.Model], results: dsl.Input[dsl.Artifact], registered_name: str,
                   mlflow_tracking_uri: str, registry: str = "mlflow", model_registry_url: str = "",
                   pipeline_run_id: str = "", pipeline_namespace: str = ""
                   ) -> NamedTuple("RegisterOutputs", version=int, model_uri=str, storage_uri=str):
    """Returns the version, its ``models:/NAME/VERSION`` URI and the artifact URI of its Hugging Face
    folder (what a KServe storageUri points at). The comparison the model won, when ``results`` holds
    one, goes on the version as tags and artifacts.

    ``registry`` "kubeflow": the version goes to the Kubeflow Model Registry at ``model_registry_url``
    instead, named after ``pipeline_run_id`` (its source, with ``pipeline_namespace``), its URI the
    model artifact's own Hugging Face folder (minio:// read as s3://); ``version`` is its id."""
    from collections import namedtuple
    from pathlib import Path

    from amopo.registry.kubeflow import storage_uri_for
    from amopo.registry.register import RegisterConfig, register

    comparison = Path(results.path) / "comparison"   # the comparison the model won (select_best puts it there)
    compared = (comparison / "comparison.json").is_file()
    cfg = RegisterConfig(train_dir=model.path, eval_metrics=str(Path(results.path) / "metrics.json"),
                         registered_model_name=registered_name, alias="challenger", mlflow_tracking_uri=mlflow_tracking_uri or None,
                         comparison=str(comparison) if compared else None,
                         comparison_label=(results.metadata.get("comparison_best") or None) if compared else None,
                         registry=registry, model_registry_url=model_registry_url, pipeline_run_id=pipeline_run_id,
                         pipeline_namespace=pipeline_namespace,
                         storage_uri=storage_uri_for(model.uri, model.path) if registry == "kubeflow" else "")
    cfg.validate()
    summary = register(cfg)
    outputs = namedtuple("RegisterOutputs", ["version", "model_uri", "storage_uri"])
    return outputs(int(summary["version"]), summary["model_uri"], summary["hf_artifact_uri"])


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register_candidates(enabled: bool, trainings: dsl.Input[List[dsl.Model]],
                        evaluations: dsl.Input[List[dsl.Artifact]], labels: list,
                        comparison: dsl.Input[dsl.Artifact], registered_name: str, mlflow_tracking_uri: str) -> str:
    """When ``enabled``: every compared objective (``labels``: the plan's items, in iteration order)
    becomes a version of ``registered_name`` with no alias, tagged amopo.comparison.label/.role and
    the comparison's verdict; the gate's registration of the best one then reuses its version.
    Returns "label=version" pairs, comma-separated ("" when not enabled)."""
    from pathlib import Path

    from amopo.registry.candidates import register_candidates as register_all

    if not enabled:
        print("register candidates: off (register_candidates=false); only the gate's choice is registered")
        return ""
    names = [item["label"] if isinstance(item, dict) else str(item) for item in labels]
    done = register_all(names, [Path(m.path) for m in trainings], [Path(e.path) for e in evaluations],
                        Path(comparison.path), name=registered_name, tracking_uri=mlflow_tracking_uri or None)
    return ",".join(f"{d['label']}={d['version']}" for d in done)
