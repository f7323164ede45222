"""Steering an AMoPO model from the client side, for chat endpoints that do not take ``dimension_targets``.

`amopo serve` applies ``dimension_targets`` itself. Other endpoints (KServe's Hugging Face runtime,
vLLM, a hosted API) take plain messages; rewrite them here exactly as `amopo serve` does, so the
model sees the conditioned prompt it was trained on (docs/steering.md)::

    from amopo.steering import conditioned_messages, load_spec
    spec = load_spec("runs/train/model")          # the model folder, or its amopo_conditioning.json
    messages = conditioned_messages(spec, [{"role": "user", "content": "Explain DNS."}], {"verbosity": 1})

Contract:

- :func:`load_spec` — a model folder gives its ``amopo_conditioning.json`` parsed, or None when the
  folder has none (SimPO/DPO and base models are not conditioned); a file path gives that file
  parsed. A named file that is missing, unreadable, not JSON, or lacks what steering needs raises
  SteeringError naming the file.
- :func:`conditioned_messages` — a new list. The LAST user message's content becomes
  ``steered_user_text(spec, targets, content)``: the dimension prefix, the separator, then the text,
  as training placed it in the user turn, in the prompt style the spec records (``amopo`` when it
  names none; never another). That is the turn the answer responds to; earlier turns and system
  messages are context and stay as sent. A style that trained with a system turn (``authors``:
  LLaMA-Factory's qwen default system prompt) puts that system message first when the messages
  have none, as training did. No targets (None or {}) returns the messages unchanged. Raises SteeringError for targets the model cannot express (unknown dimension, level
  outside the scale or not a number, a level for a holistic dimension, a model without a spec),
  for targets that are not an object, and when there is no user message to steer.
- :func:`applied_targets` — the targets as applied, in the model's dimension order (None when
  none): what `amopo serve` reports back in ``dimension_targets``.

Pure Python: no torch or transformers import, so any client can use it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from amopo.data.prompts import (CONDITIONING_FILE, PREFIX_VERSION, spec_style, steered_user_text, steering_prefix,
                                steering_system)
from amopo.errors import SteeringError

SPEC_KEYS = ("prefix_version", "dimensions", "scored_prefix", "holistic_prefix", "separator", "join")


def load_spec(path: str | Path) -> dict | None:
    """The conditioning spec of a model folder (None when it has none) or of a spec file."""
    path = Path(path)
    if path.is_dir():
        path = path / CONDITIONING_FILE
        if not path.exists():
            return None
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SteeringError(f"{path}: no such conditioning spec file (expected a model folder or its "
                            f"{CONDITIONING_FILE})") from None
    except OSError as exc:
        raise SteeringError(f"{path}: cannot read the conditioning spec ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SteeringError(f"{path}: the conditioning spec is not valid JSON ({exc})") from None
    check_spec(spec, str(path))
    return spec


def check_spec(spec: Any, where: str = "conditioning spec") -> None:
    """SteeringError unless ``spec`` has what steering needs, in a prefix version this package knows."""
    if not isinstance(spec, dict):
        raise SteeringError(f"{where}: expected a JSON object, got {type(spec).__name__}")
    missing = [k for k in SPEC_KEYS if k not in spec]
    if missing:
        raise SteeringError(f"{where}: missing {', '.join(missing)} (was it written by `amopo train`?)")
    version = spec["prefix_version"]
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= PREFIX_VERSION:
        raise SteeringError(f"{where}: prefix_version {version!r} is not one this amopo knows "
                            f"(1 to {PREFIX_VERSION}); upgrade amopo to steer this model")
    dims = spec["dimensions"]
    if not isinstance(dims, list) or not dims or not all(isinstance(d, dict) and isinstance(d.get("name"), str)
                                                          for d in dims):
        raise SteeringError(f"{where}: 'dimensions' must be a non-empty list of objects with a 'name'")
    try:
        style = spec_style(spec)
    except SteeringError as exc:
        raise SteeringError(f"{where}: {exc}") from None
    if version < style.version:
        raise SteeringError(f"{where}: prompt_style {style.name!r} needs prefix_version {style.version} or "
                            f"later, the spec says {version}")


def check_targets(targets: Any) -> dict:
    """``targets`` as a dict ({} for None); SteeringError when it is not an object."""
    if targets is None:
        return {}
    if not isinstance(targets, dict):
        raise SteeringError(f"dimension_targets must be an object of dimension → level (e.g. "
                            f'{{"verbosity": 1}}), got {type(targets).__name__}')
    return targets


def applied_targets(spec: dict | None, targets: dict | None) -> dict | None:
    """The requested targets in the model's dimension order, or None when nothing is requested.
    Call it after the targets were applied (validated)."""
    targets = check_targets(targets)
    if not targets or not spec:
        return None
    return {d["name"]: targets[d["name"]] for d in spec["dimensions"] if d["name"] in targets}


def _content_text(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise SteeringError(f"messages[{index}].content: only text (a string or text parts) can be steered")


def conditioned_messages(spec: dict | None, messages: list[dict], targets: dict | None) -> list[dict]:
    """``messages`` with the last user message steered to ``targets`` (see the module docstring)."""
    targets = check_targets(targets)
    out = [dict(m) for m in messages]
    if not targets:
        return out
    steering_prefix(spec, targets)   # the targets' errors come before the messages'
    users = [i for i, m in enumerate(out) if m.get("role") == "user"]
    if not users:
        raise SteeringError("dimension_targets steer the last user message, and there is none")
    last = users[-1]
    out[last]["content"] = steered_user_text(spec, targets, _content_text(out[last].get("content"), last))
    system = steering_system(spec)
    if system is not None and not any(m.get("role") == "system" for m in out):
        out.insert(0, {"role": "system", "content": system})
    return out
