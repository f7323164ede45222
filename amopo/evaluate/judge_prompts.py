"""Versioned judge prompts: files in ``amopo/evaluate/prompts/`` (or a folder of your own).

A prompt set is three YAML files: ``pairwise_<v>.yaml`` and ``rating_<v>.yaml`` (name, version,
system, user template, labels) and ``rubrics_<v>.yaml`` (one rubric per dimension). A version
names the shipped set (``v1``); a folder path names your own set with the same file names. The
set's identity (name, versions, sha256 of the file bytes) is recorded with every result.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from amopo.data.dimensions import KNOWN
from amopo.errors import ConfigError

SHIPPED_DIR = Path(__file__).parent / "prompts"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class JudgePrompt:
    name: str
    version: str
    system: str
    user: str
    labels: tuple[str, ...]

    def messages(self, **values: str) -> list[dict]:
        """Chat messages with the placeholders of ``user`` filled in."""
        out = [{"role": "user", "content": fill(self.user, values)}]
        return ([{"role": "system", "content": self.system}] if self.system else []) + out


@dataclass(frozen=True)
class PromptSet:
    pairwise: JudgePrompt
    rating: JudgePrompt
    rubrics: dict[str, str]
    identity: dict[str, str]

    def rubric(self, dimension: str) -> str:
        """The rubric of a dimension; a dimension without one gets its registry description."""
        if dimension in self.rubrics:
            return self.rubrics[dimension]
        if dimension in KNOWN and KNOWN[dimension].scored:
            return f"{dimension.replace('_', ' ').capitalize()}: {KNOWN[dimension].description}."
        raise ConfigError(f"judge prompts: no rubric for dimension '{dimension}' (known: "
                          f"{', '.join(sorted(self.rubrics))})")


def fill(template: str, values: dict[str, str]) -> str:
    """Replace ``{name}`` for the given names in one pass (text inside values is never re-read)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _read(path: Path) -> tuple[dict, bytes]:
    try:
        raw = path.read_bytes()
        data = yaml.safe_load(raw)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read judge prompt ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping")
    return data, raw


def _prompt(path: Path, placeholders: set[str]) -> tuple[JudgePrompt, bytes]:
    data, raw = _read(path)
    for key in ("user", "labels"):
        if key not in data:
            raise ConfigError(f"{path}: missing field '{key}'")
    missing = placeholders - set(_PLACEHOLDER.findall(data["user"]))
    if missing:
        raise ConfigError(f"{path}: field 'user' lacks placeholder(s) {', '.join('{' + m + '}' for m in sorted(missing))}")
    labels = tuple(str(label) for label in data["labels"])
    return JudgePrompt(str(data.get("name", path.stem)), str(data.get("version", "")), data.get("system") or "",
                       data["user"], labels), raw


def load_prompt_set(spec: str = "v1") -> PromptSet:
    """The shipped set ``spec`` (e.g. "v1") or the set in folder ``spec``."""
    folder = Path(spec)
    version = spec
    if not folder.is_dir():
        folder, version = SHIPPED_DIR, spec
        if not (folder / f"pairwise_{version}.yaml").is_file():
            shipped = sorted(p.stem.split("_", 1)[1] for p in SHIPPED_DIR.glob("pairwise_*.yaml"))
            raise ConfigError(f"judge prompts '{spec}': neither a folder nor a shipped version "
                              f"(shipped: {', '.join(shipped)})")
    else:
        found = sorted(folder.glob("pairwise_*.yaml"))
        if len(found) != 1:
            raise ConfigError(f"{folder}: expected exactly one pairwise_<version>.yaml, found {len(found)}")
        version = found[0].stem.split("_", 1)[1]
    pairwise, raw_p = _prompt(folder / f"pairwise_{version}.yaml", {"instruction", "output_a", "output_b"})
    if len(pairwise.labels) != 2:
        raise ConfigError(f"{folder / f'pairwise_{version}.yaml'}: 'labels' must name exactly two labels")
    rating, raw_r = _prompt(folder / f"rating_{version}.yaml", {"instruction", "output", "dimension", "rubric"})
    try:
        [float(label) for label in rating.labels]
    except ValueError:
        raise ConfigError(f"{folder / f'rating_{version}.yaml'}: 'labels' must be numbers (the scores)") from None
    rubrics_data, raw_b = _read(folder / f"rubrics_{version}.yaml")
    rubrics = {str(k): str(v).strip() for k, v in (rubrics_data.get("rubrics") or {}).items()}
    digest = hashlib.sha256(raw_p + b"\0" + raw_r + b"\0" + raw_b).hexdigest()
    identity = {"prompts": version, "pairwise_version": pairwise.version, "rating_version": rating.version,
                "prompts_sha256": digest, "prompts_dir": str(folder)}
    return PromptSet(pairwise, rating, rubrics, identity)
