"""What `amopo register` reads: a training output folder and, optionally, an eval metrics file.

Training output (written by `amopo train`)::

    OUTPUT/model/              Hugging Face folder: config.json, *.safetensors, tokenizer files
    OUTPUT/metrics.json        nested summary (heldout_final: {...}, mlflow_run_id, loss, ...)
    OUTPUT/train_config.yaml   the resolved training config (base model, objective)

Eval metrics (written by `amopo evaluate`): ``EVAL_DIR/metrics.json``, a flat JSON object with one
number per key. Everything is validated before the registry is contacted.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from amopo.registry import RegistryError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


@dataclass
class TrainingOutput:
    model_dir: Path
    metrics: dict[str, float]             # numeric leaves of metrics.json, keys joined with "/"
    training_run_id: str | None = None
    objective: str | None = None
    base_model: str | None = None
    info: dict[str, str] = field(default_factory=dict)   # other string leaves worth a tag


def flatten(nested: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict, keys joined with "/" (booleans and NaN are left out)."""
    out: dict[str, float] = {}
    for key, value in nested.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
            out[name] = float(value)
    return out


def _read_json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RegistryError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def check_hf_folder(folder: Path) -> None:
    """RegistryError unless ``folder`` holds config.json, safetensors weights and a tokenizer."""
    if not folder.is_dir():
        raise RegistryError(f"{folder}: no such model folder")
    if not (folder / "config.json").is_file():
        raise RegistryError(f"{folder}: not a Hugging Face model folder (no config.json)")
    if not any(folder.glob("*.safetensors")):
        raise RegistryError(f"{folder}: no *.safetensors weights (only safetensors are registered)")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise RegistryError(f"{folder}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")


def read_training_output(folder: str | Path) -> TrainingOutput:
    """Validate and read a training output folder (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RegistryError(f"{folder}: no such training output folder")
    model_dir = folder / "model"
    check_hf_folder(model_dir)
    metrics_path = folder / "metrics.json"
    summary = _read_json_object(metrics_path) if metrics_path.is_file() else {}
    config = {}
    config_path = folder / "train_config.yaml"
    if config_path.is_file():
        try:
            config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise RegistryError(f"{config_path}: not valid YAML ({exc})") from None
        if not isinstance(config, dict):
            raise RegistryError(f"{config_path}: expected a mapping")
    dims = summary.get("dimensions")
    info = {"dimensions": ",".join(map(str, dims))} if isinstance(dims, list) else {}
    return TrainingOutput(model_dir=model_dir, metrics=flatten(summary),
                          training_run_id=summary.get("mlflow_run_id") or None,
                          objective=summary.get("objective") or config.get("objective"),
                          base_model=config.get("base_model"), info=info)


def read_eval_metrics(path: str | Path) -> dict[str, float]:
    """A flat eval metrics file (or a folder holding metrics.json): one finite number per key."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    data = _read_json_object(path)
    out = {}
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RegistryError(f"{path}: key '{key}' must be a finite number, got {value!r}")
        out[key] = float(value)
    return out


def digest(model_dir: Path, metrics: dict[str, float]) -> str:
    """sha256 over the model folder's files (names and bytes) and the metrics; identifies a registration."""
    h = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(model_dir)).encode() + b"\0")
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    h.update(json.dumps(metrics, sort_keys=True).encode())
    return h.hexdigest()
