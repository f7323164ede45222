"""Prepare: validate preference data, build pairs and dimension prompts, tokenise for the base model."""

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def prepare_data(data_source: str, data_format: str, eval_source: str, dimensions: str, base_model: str,
                 max_length: int, prepare_options: dict, dataset: dsl.Output[dsl.Dataset],
                 annotated: dsl.Input[dsl.Dataset] = None) -> int:
    """Writes the prepared folder (train.jsonl, eval.jsonl, tokenisation cache) as ``dataset``;
    returns the number of training pairs. ``dimensions``: comma-separated, empty = the defaults.
    ``prepare_options``: any other `amopo prepare` option by name (e.g. {"steer_both_orientations": true}).
    ``annotated``: annotate_data's output; when it annotated the sources, its files are read instead."""
    from amopo.annotate.step import annotated_inputs
    from amopo.data.prepare import PrepareConfig, prepare

    options = {**prepare_options, "data_source": data_source, "data_format": data_format, "eval_source": eval_source or None,
               "output": dataset.path, "base_model": base_model or None, "max_length": max_length}
    files = annotated_inputs(annotated.path if annotated is not None else None)
    if files is not None:
        options["data_source"], options["eval_source"] = files
        if data_source == "sample":
            options["data_format"] = "amopo"
        print(f"prepare: reading the annotated data {files[0]}" + (f" and {files[1]}" if files[1] else ""))
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
