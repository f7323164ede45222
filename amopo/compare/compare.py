"""`amopo compare`: objectives trained and evaluated side by side, compared on equal terms.

    amopo compare --entry LABEL=TRAIN_DIR,EVAL_DIR --entry ... --output DIR
                  [--metric pref_accuracy/plain] [--judge DIR_OR_URL] [--no-head-to-head]

Per objective: held-out plain-prompt accuracy (binomial se) and margin, judge scores per dimension,
raw and length-controlled win rate against the base model, steerability where measured, training
throughput, wall time and peak memory where recorded (``amopo.compare.table``); per metric, the
leading objective and whether its lead is within noise (``amopo.compare.ranking``); between every
two objectives, a head-to-head win rate judged in both orders (``amopo.compare.head_to_head``).

Outputs in ``--output`` (written whole or not at all): ``comparison.json`` (flat; see below),
``comparison.md``, ``comparison.html``, ``comparison_bars.png``, ``radar_<k>_<label>.png``,
``head_to_head.jsonl`` (every judged pair) and ``compare_config.yaml``.

``comparison.json`` is one flat mapping: ``objectives`` (the labels), ``rule``, ``metric`` (the one that
picks the best), ``best`` and ``best_reason``; per objective ``<label>/<metric>`` and
``<label>/<metric>_se`` (finite numbers), ``<label>/absent`` (compared metrics its folders lack),
``<label>/loss``, ``<label>/train_dir``, ``<label>/eval_dir``; per metric ``leader/<metric>/best``,
``…/second``, ``…/lead``, ``…/noise``, ``…/within_noise``; per pair ``h2h/<a>/<b>/winrate`` (+ ``_se``,
``n``, ``wins``, ``losses``, ``ties``, ``within_noise``) or ``h2h/skipped/<who>`` (why); ``notes``.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from amopo import config as config_lib
from amopo.compare import entries as entries_lib
from amopo.compare.ranking import RULE, best_objective, leader_keys
from amopo.compare.table import catalog, dimensions, objective_metrics
from amopo.config import field
from amopo.errors import ConfigError

MARKER = "compare_config.yaml"  # a folder holding it is an earlier comparison and may be replaced
# Settings that should be equal across the objectives for the comparison to be on equal terms.
TRAIN_TERMS = ("base_model", "data", "max_steps", "epochs", "batch_size", "gradient_accumulation_steps", "max_length", "seed",
               "heldout_max_pairs")
EVAL_TERMS = ("judge", "judge_prompts", "instructions", "num_instructions", "max_new_tokens", "dimensions", "data",
              "heldout_max_pairs", "max_length", "baseline")


@dataclass
class CompareConfig:
    entries: list[str] = field(default_factory=list, flag="--entry", repeatable=True,
                               help="an objective: LABEL=TRAIN_DIR,EVAL_DIR (the label is up to the last '=', e.g. "
                                    "amopo:weighting=uniform=runs/u/train,runs/u/eval); two or more")
    output: str = field("runs/compare", help="output folder (replaced if it holds an earlier comparison)")
    metric: str = field("pref_accuracy/plain", help="metric that picks the best objective")
    higher_is_better: bool | None = field(None, help="direction of --metric (default: the metric's own; higher "
                                                     "for metrics the comparison does not know)")
    head_to_head: bool = field(True, help="judge every two objectives' answers against each other, in both orders")
    head_to_head_instructions: int = field(0, help="instructions per head-to-head pair, spread evenly over those "
                                                   "both evaluations answered (0: all of them)")
    judge: str = field("", help="head-to-head judge: a local Hugging Face model or an OpenAI-compatible endpoint "
                                "URL (default: the judge the evaluations used)")
    judge_model_name: str | None = field(None, help="served model name at the judge endpoint")
    judge_api_key_env: str | None = field(None, help="environment variable holding the judge endpoint's API key")
    judge_prompts: str = field("", help="judge prompt set (default: the evaluations')")
    judge_top_k: int | None = field(None, help="local judge: label tokens must be among the top-k next tokens "
                                               "(default: the evaluations')")
    progress: bool = field(True, help="show progress bars")

    def validate(self) -> None:
        if self.head_to_head_instructions < 0:
            raise ConfigError(f"compare config: head_to_head_instructions must be >= 0, "
                              f"got {self.head_to_head_instructions}")


def _settings_notes(entries: list[entries_lib.Entry]) -> list[str]:
    """One note per setting that differs between the objectives' runs."""
    notes = []
    for where, keys, attr in (("training", TRAIN_TERMS, "train_config"), ("evaluation", EVAL_TERMS, "eval_config")):
        for key in keys:
            seen = {e.label: getattr(e, attr).get(key) for e in entries if key in getattr(e, attr)}
            if len({repr(v) for v in seen.values()}) > 1:
                values = ", ".join(f"{k}={v}" for k, v in seen.items())
                notes.append(f"not on equal terms: {where} setting {key} differs ({values})")
    return notes


def _objective_keys(entries, metrics, table) -> dict:
    """The per-objective part of comparison.json: ``objectives`` and every ``<label>/…`` key."""
    flat: dict = {"objectives": [e.label for e in entries]}
    for e in entries:
        flat.update({f"{e.label}/{k}": v for k, v in table[e.label].items()})
        flat[f"{e.label}/absent"] = [m.name for m in metrics if m.name not in table[e.label]]
        flat.update({f"{e.label}/objective": e.objective, f"{e.label}/train_dir": str(e.train_dir),
                     f"{e.label}/eval_dir": str(e.eval_dir)})
    return flat


def _check_output(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise ConfigError(f"compare: {out}: exists and is not an earlier comparison (no {MARKER}); "
                          "choose another --output")


def _replace(tmp: Path, out: Path) -> None:
    old = out.parent / f".{out.name}.old-{os.getpid()}" if out.exists() else None
    if old is not None:
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _peak_memory_note(table) -> list[str]:
    if any("train/peak_memory_bytes" in row for row in table.values()):
        return []
    return ["peak memory: absent for every objective (the training runs did not record peak_memory_bytes)"]


def compare(cfg: CompareConfig) -> dict:
    """Compare the configured objectives; returns the summary (best objective and where everything went)."""
    from amopo.compare import head_to_head as h2h
    from amopo.compare import plots, report
    from amopo.evaluate.report import write_json, write_samples

    cfg.validate()
    entries = entries_lib.load_entries(cfg.entries)
    out = Path(cfg.output)
    _check_output(out)
    metrics = catalog(entries)
    known = {m.name: m for m in metrics}
    table = {e.label: objective_metrics(e, metrics) for e in entries}
    if cfg.metric not in known and not any(cfg.metric in row for row in table.values()):
        raise ConfigError(f"compare: --metric {cfg.metric!r} is in no objective's comparison; "
                          f"compared metrics: {', '.join(known)}")
    higher = cfg.higher_is_better if cfg.higher_is_better is not None else \
        known[cfg.metric].higher_is_better if cfg.metric in known else True
    per_objective = _objective_keys(entries, metrics, table)
    leaders = {m.name: best_objective(per_objective, m.name, m.higher_is_better) for m in metrics}
    best = best_objective(per_objective, cfg.metric, higher)

    h2h_metrics, rows, skipped = {}, [], {}
    if cfg.head_to_head:
        overrides = {"judge": cfg.judge, "judge_model_name": cfg.judge_model_name, "judge_api_key_env": cfg.judge_api_key_env,
                     "judge_prompts": cfg.judge_prompts, "judge_top_k": cfg.judge_top_k}
        h2h_metrics, rows, skipped = h2h.head_to_head(entries, overrides, progress=cfg.progress,
                                                      max_instructions=cfg.head_to_head_instructions)
    else:
        skipped = {"all": "turned off (--no-head-to-head)"}
    notes = _settings_notes(entries) + _peak_memory_note(table)
    notes += [f"head-to-head skipped for {who}: {why}" for who, why in skipped.items()]

    flat = {"rule": RULE, "metric": best.metric, "best": best.label, "best_reason": best.reason, **per_objective}
    for m in metrics:
        flat.update(leader_keys(leaders[m.name]))
    flat.update({k: v for k, v in h2h_metrics.items() if not (isinstance(v, float) and math.isnan(v))})
    flat.update({f"h2h/skipped/{who}": why for who, why in skipped.items()})
    flat["notes"] = notes

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        labels = [e.label for e in entries]
        figures = [f for f in [plots.plot_metric_bars(labels, metrics, table, tmp / "comparison_bars.png")] if f]
        figures += plots.plot_radars(labels, dimensions(entries), table, tmp)
        write_json(tmp / "comparison.json", flat)
        if rows:
            write_samples(tmp, rows, name="head_to_head")
        sources = {e.label: {"objective": e.objective, "train_dir": str(e.train_dir), "eval_dir": str(e.eval_dir)}
                   for e in entries}
        grids = [report.metrics_grid(labels, metrics, table, leaders)]
        grids += [g for g in [report.head_to_head_grid(flat, labels)] if g]
        grids.append(report.settings_grid(labels, table, sources))
        report.write_reports(tmp, best=best, grids=grids, notes=notes, figures=figures)
        (tmp / MARKER).write_text(config_lib.dump_yaml(cfg), encoding="utf-8")
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"compare: {report.headline(best)}")
    return {"best": best.label, "best_reason": best.reason, "output_dir": str(out),
            "comparison_path": str(out / "comparison.json"), "report_path": str(out / "comparison.md"),
            "html_path": str(out / "comparison.html"), "figures": [str(out / f.name) for f in figures]}
