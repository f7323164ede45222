"""Annotate (optional, before prepare): a judge adds a dimension that the data lacks (`amopo annotate`)."""

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def annotate_data(data_source: str, data_format: str, eval_source: str, dimension: str, judge: str,
                  judge_model_name: str, annotate_options: dict, annotated: dsl.Output[dsl.Dataset]) -> int:
    """Writes ``annotated`` (annotation.json, and train.jsonl / eval.jsonl with the judge's scores on
    ``dimension``) for prepare to read instead of the sources; ``dimension`` "" annotates nothing and
    prepare reads the sources as given. Returns the number of responses the judge scored.
    ``annotate_options``: any other `amopo annotate` option by name (e.g. {"cache": "/workspace/cache.jsonl"}
    to keep verdicts across runs). The judge's API key, if any, comes from AMOPO_JUDGE_API_KEY."""
    import os

    from amopo.annotate.step import annotate_sources

    options = dict(annotate_options)
    if os.environ.get("AMOPO_JUDGE_API_KEY"):
        options.setdefault("judge_api_key_env", "AMOPO_JUDGE_API_KEY")
    record = annotate_sources(annotated.path, data_source, data_format, eval_source, dimension, judge=judge,
                              judge_model_name=judge_model_name, options=options)
    scored = sum(c["scored"] for c in record["counts"].values())
    unparseable = sum(c["unparseable"] for c in record["counts"].values())
    annotated.metadata.update({"dimension": record["dimension"] or "", "scored": scored, "unparseable": unparseable,
                               "files": record["files"]})
    if not record["dimension"]:
        print("annotate: no dimension asked for; prepare reads the data as given")
    return scored
