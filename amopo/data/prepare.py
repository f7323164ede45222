"""The ``prepare`` step: read a preference source, validate it, build pairs, split train/eval, and
write normalised AMoPO records plus a manifest; optionally tokenise for a model into the cache.

Output folder::

    train.jsonl, eval.jsonl   normalised AMoPO records (with ``steer_both_orientations``, train
                              also holds the reversed steering pairs, after the original ones)
    prepare.json              manifest: source, format, dimensions with scales, counts,
                              invalid-record report, reversed steering pairs ("steer"), truncation
                              report (when tokenised), config
    tokenized/<key>/          token cache (only when ``model`` is given; see amopo.data.tokenize)

Everything is built in a sibling temp folder and renamed into place at the end, so the output is
either the previous one or the new one, never a mix; on any error nothing is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from amopo.config import field
from amopo.data.dimensions import Dimension, default_dimensions, registry, resolve_dimensions
from amopo.data.helpsteer2 import TIE_RULES, read_helpsteer2
from amopo.data.orientations import add_reversed, both_orientations, resolve_steer_dimensions, steering_pairs
from amopo.data.prompt_styles import DEFAULT_STYLE, get_style
from amopo.data.prompts import SCORE_SOURCES
from amopo.data.readers import (DEFAULT_MAX_CHARS, ReadResult, SkipReport, ensure_some, is_hub_name, read_amopo,
                                require_scores, write_amopo)
from amopo.data.tokenize import DEFAULT_MAX_LENGTH, MANIFEST_FILE, SPLITS, load_tokenized
from amopo.data.ultrafeedback import REJECTED_RULES, read_ultrafeedback
from amopo.errors import ConfigError, DataError

FORMATS = ("amopo", "helpsteer2", "ultrafeedback")
SAMPLE = "sample"
MANIFEST_VERSION = 1


@dataclass
class PrepareConfig:
    data_source: str = field(SAMPLE, help="Preference data: a .jsonl/.jsonl.gz/.parquet file, a hub dataset "
                                    "'owner/name[:split]' (helpsteer2/ultrafeedback formats), or 'sample' for "
                                    "the data shipped with amopo")
    eval_source: str | None = field(None, help="Evaluation data in the same format; when unset, an "
                                              "eval_fraction of the input is held out ('sample': its test split)")
    output: str = field("prepared", help="Output folder (replaced atomically if it holds a previous prepare "
                                         "output; any other non-empty folder is refused)")
    data_format: str = field("amopo", help="Input format: amopo (prompt/chosen/rejected records), helpsteer2 "
                                      "(raw rows, pairs built) or ultrafeedback (completions, pairs built)")
    dimensions: list[str] | None = field(None, help="Preference dimensions, in order; 'overall' is holistic (no "
                                                    "score); default per format: amopo: overall helpfulness "
                                                    "correctness instruction_following; helpsteer2: overall "
                                                    "helpfulness correctness coherence; ultrafeedback: overall "
                                                    "helpfulness truthfulness instruction_following")
    base_model: str | None = field(None, help="Model name or folder: also tokenise now into the cache with its "
                                         "tokenizer")
    max_length: int = field(DEFAULT_MAX_LENGTH, help="Token budget of prompt + response when tokenising")
    accumulate_prefixes: bool = field(False, help="Parity with the authors' released preprocessing: the "
                                                  "prefix of dimension k repeats those of dimensions 1..k")
    prompt_style: str = field(DEFAULT_STYLE, help="Wording and placement of the dimension prompts, recorded in "
                                                  "prepare.json for training and in the model's conditioning spec "
                                                  "for steering: amopo (this project's one-line instruction, blank "
                                                  "line, user text) or authors (the released code's, token for "
                                                  "token: their instruction run into the user text, newest "
                                                  "accumulated prefix first, LLaMA-Factory's qwen system prompt)")
    eval_fraction: float = field(0.1, help="Share of prompts held out for eval when no eval_source (split by "
                                           "a hash of the prompt, so equal prompts stay on one side)")
    seed: int = field(0, help="Seed of the eval split hash and of uf_rejected=random")
    skip_invalid: bool = field(False, help="Drop invalid records (counted by reason) instead of stopping at "
                                           "the first one")
    max_chars: int = field(DEFAULT_MAX_CHARS, help="Longest prompt or response accepted, in characters")
    tie_rule: str = field("sum-others", help="HelpSteer2 helpfulness ties: sum-others (higher sum of the "
                                             "other attributes wins; full ties dropped) or drop")
    uf_rejected: str = field("lowest", help="UltraFeedback rejected response: lowest mean rating, or random "
                                            "(seeded) among those rated below the chosen one")
    score_source: str = field("chosen", help="Score shown in a dimension's prompt: chosen (the chosen "
                                             "response's score, the AMoPO recipe) or scale-max (top of the scale)")
    max_records: int | None = field(None, help="Keep at most this many pairs from each source")
    steer_both_orientations: bool = field(
        False, help="This project's steering extension of the AMoPO recipe: for every pair whose two responses "
                    "differ mainly on one steering dimension k (steer_dimensions; a gap of at least steer_min_gap "
                    "on k, at most steer_tolerance on every other score both responses carry), also write the "
                    "reversed pair (chosen and rejected swapped), so k's prompt shows the low level with the "
                    "low-scored response chosen as well as the high level with the high-scored one. The reversed "
                    "record keeps every dimension, each prompt showing the new chosen response's own score (the "
                    "original's, within steer_tolerance, except on k), so on the other dimensions the two "
                    "orientations teach no preference. Reversed pairs follow the originals, in train only unless "
                    "steer_eval; counts in prepare.json under 'steer'. For conditioned (amopo) training: the "
                    "unconditioned baselines would see both orientations under one plain prompt")
    steer_dimensions: list[str] | None = field(
        None, help="Dimensions steer_both_orientations reverses pairs on (scored dimensions being prepared); "
                   "default: the prepared ones that are steerable (verbosity, complexity)")
    steer_min_gap: float = field(1.0, help="Smallest score difference on the steering dimension for a pair to "
                                           "be reversed")
    steer_tolerance: float = field(0.0, help="Largest difference allowed on every other score the two responses "
                                             "carry, requested or not, for a pair to be reversed (0: equal)")
    steer_pairs_only: bool = field(False, help="Keep in the train split only the pairs that differ mainly on a "
                                               "steering dimension, with their reversals (the share of steerable "
                                               "pairs at 1, for a model meant to learn steering); needs "
                                               "steer_both_orientations; the eval split is kept whole")
    steer_eval: bool = field(False, help="Also add reversed pairs to the eval split (off by default: held-out "
                                         "steering requests the high and the low level itself, and eval "
                                         "accuracy keeps meaning 'the chosen response wins')")

    def validate(self) -> None:
        choices = {"data_format": FORMATS, "tie_rule": TIE_RULES, "uf_rejected": REJECTED_RULES,
                   "score_source": SCORE_SOURCES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"option '{name}': expected one of {', '.join(allowed)}, "
                                  f"got {getattr(self, name)!r}")
        get_style(self.prompt_style)
        if self.dimensions is not None and not self.dimensions:
            raise ConfigError("option 'dimensions': at least one dimension is needed")
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"option 'eval_fraction': expected 0 <= x < 1, got {self.eval_fraction}")
        for name in ("max_length", "max_chars"):
            if getattr(self, name) < 1:
                raise ConfigError(f"option '{name}': expected a positive integer, got {getattr(self, name)}")
        if self.max_records is not None and self.max_records < 1:
            raise ConfigError(f"option 'max_records': expected a positive integer, got {self.max_records}")
        if self.data_source == SAMPLE and self.data_format != "amopo":
            raise ConfigError("option 'data_format': the shipped sample data is in the amopo format")
        if not str(self.output).strip():
            raise ConfigError("option 'output': an output folder is needed")
        if not self.steer_both_orientations:
            for name in ("steer_dimensions", "steer_eval", "steer_pairs_only"):
                if getattr(self, name) not in (None, False):
                    raise ConfigError(f"option '{name}' is set but steer_both_orientations is off")
        elif self.score_source != "chosen":
            raise ConfigError("option 'steer_both_orientations' needs score_source=chosen: with "
                              f"{self.score_source} both orientations of a pair would show the same level")
        if not self.steer_min_gap > 0 or self.steer_tolerance < 0:
            raise ConfigError(f"options 'steer_min_gap' > 0 and 'steer_tolerance' >= 0 expected, got "
                              f"{self.steer_min_gap} and {self.steer_tolerance}")
        if self.steer_tolerance >= self.steer_min_gap:
            raise ConfigError(f"option 'steer_tolerance' ({self.steer_tolerance}) must be below 'steer_min_gap' "
                              f"({self.steer_min_gap}), so that a pair differs mainly on one dimension at most")


# ---------------------------------------------------------------------------------------------
# Sources


def resolve_sources(source: str, eval_source: str | None) -> tuple[str, str | None]:
    """(training source, held-out source or None): "sample" is the shipped train split, held out on
    its test split unless ``eval_source`` is given."""
    if source == SAMPLE:
        from amopo.sample_data import sample_path

        return str(sample_path("train")), eval_source or str(sample_path("test"))
    return source, eval_source or None


def _sources(cfg: PrepareConfig) -> tuple[str, str | None]:
    return resolve_sources(cfg.data_source, cfg.eval_source)


def read_source(source: str, cfg: PrepareConfig) -> ReadResult:
    """Pairs from one source in ``cfg.data_format`` (validated; invalid ones raise or are counted)."""
    common = dict(skip_invalid=cfg.skip_invalid, max_chars=cfg.max_chars, max_records=cfg.max_records)
    if cfg.data_format == "helpsteer2":
        return read_helpsteer2(source, tie_rule=cfg.tie_rule, **common)
    if cfg.data_format == "ultrafeedback":
        return read_ultrafeedback(source, uf_rejected=cfg.uf_rejected, seed=cfg.seed, **common)
    if is_hub_name(source):
        raise ConfigError(f"{source}: hub datasets are read for the helpsteer2 and ultrafeedback formats; "
                          "give amopo records as a local .jsonl file")
    return read_amopo(source, **common)


def in_eval_split(prompt: str, fraction: float, seed: int) -> bool:
    """Deterministic held-out membership from a hash of (seed, prompt)."""
    digest = hashlib.sha256(f"{seed}\0{prompt}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


# ---------------------------------------------------------------------------------------------
# Output folder


def _is_previous_output(path: Path) -> bool:
    return (path / MANIFEST_FILE).is_file()


def check_output(path: Path) -> None:
    """Refuse an output path that is a file or a non-empty folder not written by ``prepare``."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ConfigError(f"{path}: output exists and is not a folder; refusing to replace it")
    if path.is_dir() and any(path.iterdir()) and not _is_previous_output(path):
        raise ConfigError(f"{path}: output folder is not empty and holds no previous prepare output "
                          f"({MANIFEST_FILE}); refusing to replace it")


def _replace_folder(tmp: Path, out: Path) -> None:
    """Move ``tmp`` to ``out``; a previous output is swapped out first and deleted after."""
    check_output(out)
    if not out.exists():
        os.rename(tmp, out)
        return
    if not any(out.iterdir()):
        out.rmdir()
        os.rename(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _load_tokenizer(name_or_path: str):
    from amopo.models import load_tokenizer

    return load_tokenizer(name_or_path)


# ---------------------------------------------------------------------------------------------
# The step


def _describe(dim: Dimension) -> str:
    if not dim.scored:
        return f"{dim.name} (holistic)"
    return f"{dim.name} {dim.low:g}-{dim.high:g}" + (" (scale inferred)" if dim.inferred else "")


def _summary(manifest: dict, out: Path) -> list[str]:
    counts = manifest["counts"]
    lines = [f"prepared {counts['train']} train / {counts['eval']} eval pairs from {manifest['source']['data_source']} "
             f"(format {manifest['source']['data_format']}) -> {out}",
             "dimensions: " + ", ".join(_describe(Dimension.from_json(d)) for d in manifest["dimensions"])]
    invalid = manifest["invalid"]
    if invalid["skipped"]:
        reasons = ", ".join(f"{k}={v}" for k, v in invalid["by_reason"].items())
        lines.append(f"skipped {invalid['skipped']} invalid records: {reasons}")
    steer = manifest.get("steer")
    if steer:
        for split, r in steer["splits"].items():
            if r is None:
                lines.append(f"{split}: no reversed steering pairs (steer_eval is off)")
                continue
            by_dim = ", ".join(f"{k} {v}" for k, v in r["reversed"].items())
            lines.append(f"{split}: added {r['added']} reversed steering pairs ({by_dim}) to {r['pairs']} pairs"
                         + (f"; {r['already_present']} already there" if r["already_present"] else ""))
    for name, stats in manifest["build"].items():
        if stats.get("ties_dropped") or stats.get("unpaired_rows"):
            lines.append(f"{name}: {stats.get('ties_dropped', 0)} tied pairs dropped, "
                         f"{stats.get('unpaired_rows', 0)} unpaired rows")
    tok = manifest.get("tokenized")
    if tok:
        for split in SPLITS:
            r = tok["splits"][split]
            lines.append(f"tokenised {split} for {tok['base_model']} (max_length {tok['max_length']}): {r['kept']} kept, "
                         f"{r['truncated_prompts']} prompts cut, {r['truncated_responses']} responses cut, "
                         f"{r['dropped']} dropped")
    return lines


def prepare(cfg: PrepareConfig, *, echo: Callable[[str], None] | None = print) -> dict:
    """Run the prepare step and return its manifest (also written as ``prepare.json``).

    Raises DataError (file, line, field) on bad input unless ``cfg.skip_invalid``, ConfigError on a
    bad option or an output folder it must not replace; in both cases nothing is written.
    """
    cfg.validate()
    out = Path(cfg.output).expanduser()
    check_output(out)
    train_src, eval_src = _sources(cfg)

    report = SkipReport()
    train = read_source(train_src, cfg)
    report.merge(train.skipped)
    held_out = read_source(eval_src, cfg) if eval_src else None
    if held_out:
        report.merge(held_out.skipped)
    everything = train.pairs + (held_out.pairs if held_out else [])
    dims = resolve_dimensions(cfg.dimensions or default_dimensions(cfg.data_format), everything, file=train_src, known=registry(cfg.data_format))
    train_pairs = require_scores(train.pairs, dims, report, cfg.skip_invalid)
    ensure_some(train_pairs, train_src, report)
    if held_out:
        eval_pairs = require_scores(held_out.pairs, dims, report, cfg.skip_invalid)
    else:
        split = [in_eval_split(p.prompt, cfg.eval_fraction, cfg.seed) for p in train_pairs]
        eval_pairs = [p for p, e in zip(train_pairs, split) if e]
        train_pairs = [p for p, e in zip(train_pairs, split) if not e]
        if not train_pairs:
            raise DataError(f"every pair fell into the eval split (eval_fraction={cfg.eval_fraction})",
                            file=train_src, field="eval_fraction")
    steer = None
    if cfg.steer_both_orientations:  # after the split, so a reversed pair stays beside its original
        steer_dims = resolve_steer_dimensions(cfg.steer_dimensions, dims)
        common = dict(min_gap=cfg.steer_min_gap, tolerance=cfg.steer_tolerance)
        if cfg.steer_pairs_only:
            train_pairs = steering_pairs(train_pairs, steer_dims, dims, **common)
            if not train_pairs:
                raise DataError(f"steer_pairs_only: no train pair differs mainly on "
                                f"{', '.join(d.name for d in steer_dims)}", file=train_src)
        train_pairs, train_report = add_reversed(train_pairs, steer_dims, dims, **common)
        eval_report = None
        if cfg.steer_eval:
            eval_pairs, eval_report = add_reversed(eval_pairs, steer_dims, dims, **common)
        steer = {"dimensions": [d.name for d in steer_dims], **common, "pairs_only": cfg.steer_pairs_only,
                 "splits": {"train": train_report.to_json(), "eval": eval_report.to_json() if eval_report else None}}

    manifest = {
        "version": MANIFEST_VERSION,
        "source": {"data_source": cfg.data_source, "train": train_src, "eval": eval_src, "data_format": cfg.data_format},
        "dimensions": [d.to_json() for d in dims],
        # the dimensions the train split shows both ways: what a conditioned model learns to steer
        "steer_trained": both_orientations(train_pairs, dims, min_gap=cfg.steer_min_gap, tolerance=cfg.steer_tolerance),
        "counts": {"train": len(train_pairs), "eval": len(eval_pairs), "skipped": report.total},
        "build": {"train": train.stats, **({"eval": held_out.stats} if held_out else {})},
        "invalid": report.to_json(),
        "steer": steer,
        "tokenized": None,
        "config": dataclasses.asdict(cfg),
    }

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write_amopo(tmp / "train.jsonl", train_pairs)
        write_amopo(tmp / "eval.jsonl", eval_pairs)
        _write_manifest(tmp, manifest)
        if cfg.base_model:
            tokenizer = _load_tokenizer(cfg.base_model)
            splits = {}
            for name in SPLITS:
                try:
                    result = load_tokenized(tmp, tokenizer, name, max_length=cfg.max_length,
                                            accumulate_prefixes=cfg.accumulate_prefixes,
                                            prompt_style=cfg.prompt_style)
                except DataError as err:
                    if err.reason != "nothing_fits":
                        raise
                    # name the user's input, not the temp folder that is about to vanish
                    raise DataError(f"no {name} pair fits max_length={cfg.max_length} with the {cfg.base_model} "
                                    "tokenizer (the conditioned prompt scaffolding alone is too long)",
                                    file=eval_src if name == "eval" and eval_src else train_src,
                                    field="max_length", reason="nothing_fits") from None
                splits[name] = {"cache": result.cache_dir.name, **result.report}
            manifest["tokenized"] = {"base_model": cfg.base_model, "max_length": cfg.max_length,
                                     "accumulate_prefixes": cfg.accumulate_prefixes, "splits": splits}
            _write_manifest(tmp, manifest)
        _replace_folder(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if echo:
        for line in _summary(manifest, out):
            echo(line)
    return manifest


def _write_manifest(folder: Path, manifest: dict) -> None:
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
