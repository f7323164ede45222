"""Register: the trained model and its evaluation in the MLflow Model Registry, alias "challenger"."""

from typing import NamedTuple

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register_model(model: dsl.Input[dsl.Model], results: dsl.Input[dsl.Artifact], registered_name: str,
                   mlflow_tracking_uri: str) -> NamedTuple("RegisterOutputs", version=int, model_uri=str,
                                                           storage_uri=str):
    """Returns the version, its ``models:/NAME/VERSION`` URI and the artifact URI of its Hugging Face
    folder (what a KServe storageUri points at). The comparison the model won, when ``results`` holds
    one, goes on the version as tags and artifacts."""
    from collections import namedtuple
    from pathlib import Path

    from amopo.registry.register import RegisterConfig, register

    comparison = Path(results.path) / "comparison"   # the comparison the model won (select_best puts it there)
    cfg = RegisterConfig(train_dir=model.path, eval_metrics=str(Path(results.path) / "metrics.json"),
                         name=registered_name, alias="challenger", tracking_uri=mlflow_tracking_uri or None,
                         comparison=str(comparison) if (comparison / "comparison.json").is_file() else None)
    cfg.validate()
    summary = register(cfg)
    outputs = namedtuple("RegisterOutputs", ["version", "model_uri", "storage_uri"])
    return outputs(int(summary["version"]), summary["model_uri"], summary["hf_artifact_uri"])
