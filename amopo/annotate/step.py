"""Annotation as a pipeline step before prepare: annotate the training and held-out sources into one
folder, and tell prepare which files to read instead.

    annotate_sources(folder, "nvidia/HelpSteer2", "helpsteer2", "", "instruction_following", judge=...)
    annotated_inputs(folder)   # -> ("folder/train.jsonl", "folder/eval.jsonl" or None), or None

The folder holds ``annotation.json`` (what was done), and when a dimension was asked for,
``train.jsonl`` and ``eval.jsonl`` (when there is a held-out source) with their annotate reports and
answer caches. With no dimension the step annotates nothing and prepare reads the sources as given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from amopo.annotate.config import AnnotateConfig
from amopo.annotate.run import annotate
from amopo.data.prepare import resolve_sources
from amopo.errors import ConfigError

RECORD = "annotation.json"
RESERVED = ("data_source", "output", "data_format", "dimension", "judge", "judge_model_name")


def annotate_sources(folder: str | Path, data_source: str, data_format: str, eval_source: str, dimension: str, *,
                     judge: str, judge_model_name: str | None = None, options: dict | None = None,
                     echo: Callable[[str], None] | None = print) -> dict:
    """Annotate ``dimension`` on ``data_source`` (and ``eval_source``; for "sample", its two splits)
    into ``folder``/train.jsonl (and eval.jsonl), in ``data_format``; ``dimension`` "" annotates
    nothing. ``options``: any other `amopo annotate` option by name (cache, prompts, retries …).
    Writes and returns the record of ``annotation.json``: {"dimension", "format", "sources",
    "files": {split: name}, "counts": {split: the annotate report's counts}}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    options = dict(options or {})
    clash = sorted(set(options) & set(RESERVED))
    if clash:
        raise ConfigError(f"annotate options: {', '.join(clash)} come from the pipeline's own parameters "
                          f"(data_source, data_format, annotate_dimension, judge, judge_model_name)")
    dimension = dimension.strip()
    record = {"dimension": dimension or None, "format": data_format, "sources": {}, "files": {}, "counts": {}}
    if dimension:
        fmt = "amopo" if data_source == "sample" else data_format
        record["format"] = fmt
        train, held = resolve_sources(data_source, eval_source)
        for split, source in (("train", train), ("eval", held)):
            if source is None:
                continue
            name = f"{split}.jsonl"
            cfg = AnnotateConfig(**{**options, "data_source": source, "output": str(folder / name), "data_format": fmt,
                                    "dimension": dimension, "judge": judge, "judge_model_name": judge_model_name or None})
            report = annotate(cfg, echo=echo)
            record["sources"][split], record["files"][split] = source, name
            record["counts"][split] = report["counts"]
    (folder / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def annotated_inputs(folder: str | Path | None) -> tuple[str, str | None] | None:
    """(train file, held-out file or None) written by :func:`annotate_sources` in ``folder``; None
    when the folder is absent or nothing was annotated there."""
    if folder is None or not (Path(folder) / RECORD).is_file():
        return None
    record = json.loads((Path(folder) / RECORD).read_text(encoding="utf-8"))
    files = record.get("files") or {}
    if "train" not in files:
        return None
    return str(Path(folder) / files["train"]), (str(Path(folder) / files["eval"]) if "eval" in files else None)
