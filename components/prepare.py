"""Prepare: validate preference data, build pairs and dimension prompts, tokenise for the base model."""

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def prepare_data(data_source: str, data_format: str, eval_source: str, dimensions: str, base_model: str,
                 max_length: int, prepare_options: dict, dataset: dsl.Output[dsl.Dataset]) -> int:
    """Writes the prepared folder (train.jsonl, eval.jsonl, tokenisation cache) as ``dataset``;
    returns the number of training pairs. ``dimensions``: comma-separated, empty = the defaults.
    ``prepare_options``: any other `amopo prepare` option by name (e.g. {"steer_both_orientations": true})."""
    from amopo.data.prepare import PrepareConfig, prepare

    options = {**prepare_options, "input": data_source, "format": data_format, "eval_input": eval_source or None,
               "output": dataset.path, "model": base_model or None, "max_length": max_length}
    if dimensions.strip():
        options["dimensions"] = [d.strip() for d in dimensions.split(",") if d.strip()]
    cfg = PrepareConfig(**options)
    cfg.validate()
    manifest = prepare(cfg, echo=print)
    dataset.metadata.update({"train_pairs": manifest["counts"]["train"], "eval_pairs": manifest["counts"]["eval"],
                             "skipped": manifest["counts"]["skipped"], "format": data_format,
                             "dimensions": [d["name"] for d in manifest["dimensions"]],
                             "reversed_pairs": ((manifest.get("steer") or {}).get("splits", {}).get("train", {})
                                                .get("added", 0))})
    return int(manifest["counts"]["train"])
