"""The versioned rubric prompt an annotating judge scores with, as a judge ``PromptSet``.

A rubric prompt is one YAML file: ``name``, ``version``, ``system``, a ``user`` template with the
placeholders {dimension} {rubric} {instruction} {output} {low} {high}, and ``rubrics`` (one per
dimension, anchored on that dimension's scale). ``v1`` names the shipped
``amopo/annotate/prompts/annotate_v1.yaml``; a path names a file of your own.

For one dimension the file becomes the ``rating`` prompt of a ``PromptSet`` (the shape the judges
in ``amopo.evaluate.judges`` take): {low} and {high} filled from the dimension's scale in
``amopo.data.dimensions.KNOWN``, the labels its whole levels (``"1"`` … ``"5"`` for
instruction_following, ``"0"`` … ``"4"`` for the HelpSteer2 attributes). The set's ``pairwise``
prompt is the shipped judge prompt, which annotation never uses. The identity (spec, name,
version, sha256 of the file bytes, file path) is recorded with every score.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import yaml

from amopo.data.dimensions import Dimension
from amopo.errors import ConfigError
from amopo.evaluate.judge_prompts import JudgePrompt, PromptSet, fill, load_prompt_set

SHIPPED_DIR = Path(__file__).parent / "prompts"
PLACEHOLDERS = {"dimension", "rubric", "instruction", "output", "low", "high"}


def prompt_file(spec: str) -> Path:
    """The YAML file ``spec`` names: a shipped version (``v1``) or a path."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    shipped = SHIPPED_DIR / f"annotate_{spec}.yaml"
    if shipped.is_file():
        return shipped
    versions = sorted(p.stem.split("_", 1)[1] for p in SHIPPED_DIR.glob("annotate_*.yaml"))
    raise ConfigError(f"annotation prompt '{spec}': neither a file nor a shipped version "
                      f"(shipped: {', '.join(versions)})")


def levels(dim: Dimension) -> list[int]:
    """The whole levels of a dimension's scale, low to high."""
    return list(range(int(dim.low), int(dim.high) + 1))


def load_rubric_prompt(spec: str, dim: Dimension) -> PromptSet:
    """The prompt set that scores ``dim`` on its own scale; ConfigError names the file and field."""
    path = prompt_file(spec)
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("user"), str):
        raise ConfigError(f"{path}: expected a mapping with a 'user' template")
    missing = PLACEHOLDERS - set(re.findall(r"\{(\w+)\}", data["user"]))
    if missing:
        raise ConfigError(f"{path}: field 'user' lacks placeholder(s) "
                          + ", ".join("{" + m + "}" for m in sorted(missing)))
    rubrics = data.get("rubrics") or {}
    if dim.name not in rubrics:
        raise ConfigError(f"{path}: field 'rubrics' has no rubric for dimension '{dim.name}' "
                          f"(it has: {', '.join(sorted(rubrics)) or 'none'})")
    scale = levels(dim)
    user = fill(data["user"], {"low": str(scale[0]), "high": str(scale[-1])})
    name, version = str(data.get("name", path.stem)), str(data.get("version", ""))
    rating = JudgePrompt(name, version, data.get("system") or "", user, tuple(str(v) for v in scale))
    identity = {"prompts": spec, "prompt_name": name, "prompt_version": version,
                "prompts_sha256": hashlib.sha256(raw).hexdigest(), "prompts_file": str(path)}
    return PromptSet(load_prompt_set("v1").pairwise, rating, {dim.name: str(rubrics[dim.name]).strip()}, identity)
