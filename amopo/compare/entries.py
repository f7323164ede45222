"""The objectives to compare: a label, a training output folder and an evaluation output folder each.

An entry on the command line is ``LABEL=TRAIN_DIR,EVAL_DIR``. The label is everything before the
last ``=`` (so ``amopo:weighting=uniform=runs/u/train,runs/u/eval`` is the label
``amopo:weighting=uniform``); the two folders follow, split at the one comma. Folders therefore hold
no ``=`` and no ``,``; labels hold no ``/`` (they prefix the keys of ``comparison.json``).

A training folder is what ``amopo train --output`` writes (``metrics.json`` required;
``history.jsonl``, ``train_config.yaml``, ``model/`` read when present); an evaluation folder is
what ``amopo evaluate --output`` writes (``metrics.json`` required; ``eval_config.yaml``,
``report.json`` and ``outputs/model.jsonl`` read when present).

A label whose first part (before any ``:``) names an objective (amopo, simpo, dpo, modpo) must
match the loss its training folder trained with: a swapped pair of folders is refused, not compared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import yaml

from amopo.errors import ConfigError
from amopo.train.config import DEFAULT_BETA


@dataclass
class Entry:
    label: str
    train_dir: Path
    eval_dir: Path
    train_metrics: dict = field(default_factory=dict)
    eval_metrics: dict = field(default_factory=dict)
    train_config: dict = field(default_factory=dict)   # train_config.yaml ({} when absent)
    eval_config: dict = field(default_factory=dict)    # eval_config.yaml ({} when absent)
    history: list[dict] = field(default_factory=list)  # history.jsonl records ([] when absent)

    @property
    def objective(self) -> str | None:
        return self.train_metrics.get("objective") or self.train_config.get("objective")

    @property
    def beta(self) -> float | None:
        """The β the run trained with: the configured one, else its objective's default."""
        beta = self.train_config.get("beta")
        if beta is None and self.objective in DEFAULT_BETA:
            return DEFAULT_BETA[self.objective]
        return None if beta is None else float(beta)

    @property
    def outputs(self) -> Path:
        return self.eval_dir / "outputs" / "model.jsonl"


def parse_entry(text: str) -> tuple[str, Path, Path]:
    """``LABEL=TRAIN_DIR,EVAL_DIR`` → (label, train folder, evaluation folder); ConfigError naming the entry."""
    label, sep, dirs = text.rpartition("=")
    parts = dirs.split(",")
    if not sep or not label.strip() or len(parts) != 2 or not all(p.strip() for p in parts):
        raise ConfigError(f"compare: entry {text!r} is malformed; expected LABEL=TRAIN_DIR,EVAL_DIR")
    label = label.strip()
    if "/" in label:
        raise ConfigError(f"compare: entry {text!r}: the label {label!r} holds '/'; labels prefix the keys of "
                          "comparison.json and must not")
    return label, Path(parts[0].strip()), Path(parts[1].strip())


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ConfigError(f"compare: {path}: missing; the {what} has no metrics.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"compare: {path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"compare: {path}: expected a JSON object")
    return data


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"compare: {path}: not readable YAML ({exc})") from None
    return data if isinstance(data, dict) else {}


def read_jsonl(path: Path) -> list[dict]:
    """The objects of a JSONL file, one a line ([] when the file is absent, e.g. a ``history.jsonl``)."""
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"compare: {path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise ConfigError(f"compare: {path}:{number}: expected a JSON object")
        records.append(record)
    return records


def _folder(path: Path, label: str, what: str) -> Path:
    if not path.is_dir():
        raise ConfigError(f"compare: {label}: {what} folder {path} does not exist")
    return path


def _check_objective(entry: Entry) -> None:
    named = entry.label.split(":", 1)[0]
    if named in DEFAULT_BETA and entry.objective and entry.objective != named:
        raise ConfigError(f"compare: {entry.label}: the label names objective {named!r} but its training folder "
                          f"{entry.train_dir} trained {entry.objective!r}")


def load_entry(label: str, train_dir: Path, eval_dir: Path) -> Entry:
    """Read and check one objective's folders."""
    train_dir = _folder(Path(train_dir), label, "training")
    eval_dir = _folder(Path(eval_dir), label, "evaluation")
    entry = Entry(label, train_dir, eval_dir,
                  train_metrics=_read_json(train_dir / "metrics.json", f"training folder of {label}"),
                  eval_metrics=_read_json(eval_dir / "metrics.json", f"evaluation folder of {label}"),
                  train_config=_read_yaml(train_dir / "train_config.yaml"),
                  eval_config=_read_yaml(eval_dir / "eval_config.yaml"),
                  history=read_jsonl(train_dir / "history.jsonl"))
    _check_objective(entry)
    return entry


def load_entries(texts: Sequence[str]) -> list[Entry]:
    """Every ``LABEL=TRAIN_DIR,EVAL_DIR`` entry, read and checked; at least one (a pipeline run of one
    objective is a comparison of one), labels distinct."""
    parsed = [parse_entry(t) for t in texts]
    seen: set[str] = set()
    for label, _, _ in parsed:
        if label in seen:
            raise ConfigError(f"compare: label {label!r} is given twice; every objective needs its own label")
        seen.add(label)
    if not parsed:
        raise ConfigError("compare: needs at least one entry (--entry LABEL=TRAIN_DIR,EVAL_DIR ...)")
    return [load_entry(*p) for p in parsed]


def _evaluated_model(eval_dir: Path) -> Path | None:
    """The model folder an evaluation says it evaluated (report.json, else eval_config.yaml)."""
    for name, read in (("report.json", lambda p: json.loads(p.read_text(encoding="utf-8"))),
                       ("eval_config.yaml", lambda p: yaml.safe_load(p.read_text(encoding="utf-8")))):
        try:
            model = (read(eval_dir / name) or {}).get("model")
        except (OSError, ValueError, yaml.YAMLError, AttributeError):
            continue
        if model:
            return Path(model)
    return None


def pair_evaluations(train_dirs: Sequence[Path], eval_dirs: Sequence[Path]) -> list[Path]:
    """The evaluation folders reordered to follow ``train_dirs``: evaluation j belongs to training i
    when it evaluated ``train_dirs[i]/model``. When that does not pair every folder one to one (e.g. an
    evaluation of a copied model), the given order is kept."""
    if len(train_dirs) != len(eval_dirs):
        raise ConfigError(f"compare: {len(train_dirs)} training folders but {len(eval_dirs)} evaluation folders")
    index = {str(Path(t, "model").resolve()): i for i, t in enumerate(train_dirs)}
    owner = []
    for e in eval_dirs:
        model = _evaluated_model(Path(e))
        owner.append(index.get(str(model.resolve())) if model else None)
    if sorted(o for o in owner if o is not None) != list(range(len(train_dirs))):
        return [Path(e) for e in eval_dirs]
    ordered: list[Path] = [Path()] * len(train_dirs)
    for e, o in zip(eval_dirs, owner):
        ordered[o] = Path(e)
    return ordered
