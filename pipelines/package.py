"""The compiled pipeline package (KFP IR YAML): what `amopo pipeline compile` writes and `submit` sends."""

from __future__ import annotations

from pathlib import Path

COMPILED = Path(__file__).resolve().parent / "amopo_pipeline.yaml"


def compile_pipeline(output: str | Path = COMPILED, *, image: str | None = None) -> Path:
    """Compile to KFP IR YAML (atomically: a failed compile leaves the previous file).

    ``image``: the default of the ``image`` parameter, the image every step, TrainJob and custom
    InferenceService runs (default :data:`amopo.IMAGE`); a run can still set another.
    """
    from kfp import compiler

    from pipelines.amopo_pipeline import amopo_pipeline

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".tmp-{output.name}")
    compiler.Compiler().compile(amopo_pipeline, str(tmp), pipeline_parameters={"image": image} if image else None)
    tmp.replace(output)
    return output
