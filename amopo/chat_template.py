"""Steering in the chat template: a trained model folder whose template takes ``dimension_targets``.

Any engine that renders the model's own chat template and passes template variables through then
steers the model with no amopo code in the server: vLLM's OpenAI server takes ``chat_template_kwargs``
in the chat request body ("Additional kwargs to pass to the template renderer. Will be accessible by
the chat template.", ``ChatCompletionRequest`` in ``vllm/entrypoints/openai/protocol.py``), SGLang's
too (``ChatCompletionRequest.chat_template_kwargs``, ``python/sglang/srt/entrypoints/openai/protocol.py``),
KServe's Hugging Face runtime serves its OpenAI routes through vLLM, and transformers'
``tokenizer.apply_chat_template(messages, dimension_targets=...)`` passes extra keyword arguments to
the template (``tests/test_chat_template.py`` renders through it)::

    {"messages": [...], "chat_template_kwargs": {"dimension_targets": {"verbosity": 1}}}

Contract of the compiled template (:func:`compile_template`):

- with ``dimension_targets`` an object of targets, it renders exactly what the base template renders
  from :func:`amopo.steering.conditioned_messages` (the last user turn steered, the style's system turn
  when the messages have none), token for token;
- without the variable, or with null or {}, exactly what the base template renders;
- targets the model cannot express stop rendering with ``raise_exception`` and the message `amopo
  serve` gives (unknown dimension, level off the scale or not a number, a level for a holistic
  dimension, targets that are not an object, no user message, non-text content). The one
  difference: for targets that are not an object, the type is named as JSON would give it (str,
  int, float, bool, list; "object" for anything else).

The template is written for the Hugging Face chat-template environment (``trim_blocks`` and
``lstrip_blocks`` on, ``raise_exception`` and ``dict`` defined), which transformers, vLLM and
SGLang all use. The steering part comes first and ends with a marker; what follows is the base
template unchanged, so compiling again (a new spec) replaces the steering part only.

:func:`write_chat_template` writes it into a model folder as ``chat_template.jinja`` (what
transformers 5 saves and reads first; a ``chat_template`` entry in ``tokenizer_config.json`` is
dropped so the two cannot disagree). Training calls it; call it yourself for a folder trained
before (``python -c "from amopo.chat_template import write_chat_template; write_chat_template('MODEL')"``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from amopo.data.dimensions import Dimension
from amopo.data.prompts import CONDITIONING_FILE, _allowed, dimension_prefix, scored_names, spec_style
from amopo.errors import SteeringError

TEMPLATE_FILE = "chat_template.jinja"
BEGIN = "{#- amopo steering: compiled from amopo_conditioning.json by amopo.chat_template #}"
END = "{#- amopo steering: end; the base chat template follows #}\n"
_SLOT = "\x00amopo-score\x00"


class _Slot(float):
    """A score that formats as a placeholder: splits a scored prefix around its score."""

    def __format__(self, spec: str) -> str:
        return _SLOT


def _lit(value) -> str:
    """``value`` as a Jinja literal (strings keep every character: Jinja unescapes them as Python does)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_lit(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_lit(k)}: {_lit(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no Jinja literal for {type(value).__name__}")


def _dimension_data(spec: dict) -> list[dict]:
    style = spec_style(spec)
    dims = [Dimension.from_json(d) for d in spec["dimensions"]]
    names = scored_names(dims)
    out = []
    for d in dims:
        if d.scored:
            parts = dimension_prefix(d, _Slot(0.0), style, dimensions=names).split(_SLOT)
            out.append({"name": d.name, "scored": True, "low": float(d.low), "high": float(d.high), "parts": parts,
                        "scale": f"{d.low:g} to {d.high:g}"})
        else:
            out.append({"name": d.name, "scored": False, "prefix": dimension_prefix(d, None, style, dimensions=names)})
    return out


_PREAMBLE = r"""
{%- if dimension_targets is defined and dimension_targets is not none -%}
{%- set t = dimension_targets -%}
{%- if t is not mapping -%}
{%- if t is boolean %}{% set tn = 'bool' %}{% elif t is integer %}{% set tn = 'int' %}{% elif t is float %}{% set tn = 'float' %}{% elif t is string %}{% set tn = 'str' %}{% elif t is sequence %}{% set tn = 'list' %}{% else %}{% set tn = 'object' %}{% endif -%}
{{- raise_exception('dimension_targets must be an object of dimension → level (e.g. {"verbosity": 1}), got ' ~ tn) -}}
{%- endif -%}
{%- if t | length > 0 -%}
{%- set unknown = t | reject('in', amopo_names) | map('string') | sort(case_sensitive=true) | list -%}
{%- if unknown -%}
{{- raise_exception('unknown dimension(s) ' ~ unknown | join(', ') ~ '; this model steers: ' ~ amopo_allowed) -}}
{%- endif -%}
{%- set ns = namespace(parts=[]) -%}
{%- for d in amopo_dims if d.name in t -%}
{%- set level = t[d.name] -%}
{%- if not d.scored -%}
{%- if level is not none -%}
{{- raise_exception("dimension '" ~ d.name ~ "' is holistic and takes no level (use null); this model steers: " ~ amopo_allowed) -}}
{%- endif -%}
{%- set ns.parts = ns.parts + [d.prefix] -%}
{%- else -%}
{%- if level is boolean or level is not number or level != level or level < d.low or level > d.high -%}
{{- raise_exception("dimension '" ~ d.name ~ "': level " ~ (level | pprint) ~ " is not a number from " ~ d.scale ~ "; this model steers: " ~ amopo_allowed) -}}
{%- endif -%}
{%- set ns.parts = ns.parts + [d.parts | join('%g' | format(level))] -%}
{%- endif -%}
{%- endfor -%}
{%- set prefix = (ns.parts | reverse | list if amopo_newest_first else ns.parts) | join(amopo_join) -%}
{%- set ns.last = -1 -%}
{%- for m in messages -%}{%- if m.role == 'user' %}{% set ns.last = loop.index0 %}{% endif -%}{%- endfor -%}
{%- if ns.last < 0 -%}
{{- raise_exception('dimension_targets steer the last user message, and there is none') -}}
{%- endif -%}
{%- set content = messages[ns.last].content -%}
{%- if content is not string -%}
{%- set ns.text = '' -%}
{%- set ns.ok = content is sequence and content is not mapping -%}
{%- if ns.ok -%}{%- for p in content -%}
{%- if p is mapping and p.type == 'text' and p.text is string %}{% set ns.text = ns.text ~ p.text %}{% else %}{% set ns.ok = false %}{% endif -%}
{%- endfor -%}{%- endif -%}
{%- if not ns.ok -%}
{{- raise_exception('messages[' ~ ns.last ~ '].content: only text (a string or text parts) can be steered') -}}
{%- endif -%}
{%- set content = ns.text -%}
{%- endif -%}
{%- set messages = messages[:ns.last] + [dict(messages[ns.last], content=prefix ~ amopo_separator ~ content)] + messages[ns.last + 1:] -%}
{%- if amopo_system is not none and (messages | selectattr('role', 'equalto', 'system') | list | length) == 0 -%}
{%- set messages = [{'role': 'system', 'content': amopo_system}] + messages -%}
{%- endif -%}
{%- endif -%}
{%- endif %}"""


def compile_template(spec: dict, base_template: str) -> str:
    """The chat template that steers by ``dimension_targets`` (module docstring), around ``base_template``
    (a compiled template's base is taken out first, so compiling is idempotent)."""
    from amopo.steering import check_spec

    check_spec(spec)
    base = base_template_of(base_template)
    style = spec_style(spec)
    dims = [Dimension.from_json(d) for d in spec["dimensions"]]
    data = _dimension_data(spec)
    sets = [("amopo_dims", data), ("amopo_names", [d["name"] for d in data]), ("amopo_allowed", _allowed(dims)),
            ("amopo_join", style.join), ("amopo_separator", style.separator),
            ("amopo_newest_first", style.newest_first), ("amopo_system", style.system)]
    head = "".join(f"{{%- set {name} = {_lit(value)} -%}}\n" for name, value in sets)
    return BEGIN + "\n" + head + _PREAMBLE.lstrip("\n") + END + base


def base_template_of(template: str) -> str:
    """The base template inside a compiled one (``template`` itself when it is not compiled)."""
    if template.startswith(BEGIN):
        at = template.find(END)
        if at < 0:
            raise SteeringError("chat template: starts as amopo's steering template but has no end marker; "
                                "restore the base model's chat template")
        return template[at + len(END):]
    return template


def read_base_template(model_dir: Path) -> str:
    """The chat template a model folder carries: ``chat_template.jinja``, else ``tokenizer_config.json``'s
    ``chat_template`` (a string, or the ``default`` of a named list). SteeringError when it has none."""
    jinja = model_dir / TEMPLATE_FILE
    if jinja.exists():
        return jinja.read_text(encoding="utf-8")
    config = model_dir / "tokenizer_config.json"
    template = None
    if config.exists():
        try:
            template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        except json.JSONDecodeError as exc:
            raise SteeringError(f"{config}: not valid JSON ({exc})") from None
        if isinstance(template, list):
            template = next((t.get("template") for t in template if isinstance(t, dict)
                             and t.get("name") == "default"), None)
    if not isinstance(template, str) or not template:
        raise SteeringError(f"{model_dir}: the tokenizer has no chat template ({TEMPLATE_FILE} or a chat_template "
                            f"in tokenizer_config.json) to steer; steering in the template needs one")
    return template


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_chat_template(model_dir: str | Path) -> Path | None:
    """Compile the steering chat template of ``model_dir`` from its ``amopo_conditioning.json`` and its
    tokenizer's template, and write it as ``chat_template.jinja``. Returns the file, or None when the
    folder has no conditioning spec (nothing to steer; the folder is left as it is)."""
    from amopo.steering import load_spec

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise SteeringError(f"{model_dir}: not a model folder")
    spec = load_spec(model_dir)
    if spec is None:
        return None
    try:
        template = compile_template(spec, read_base_template(model_dir))
    except SteeringError as exc:
        raise SteeringError(f"{model_dir / CONDITIONING_FILE}: {exc}") from None
    config = model_dir / "tokenizer_config.json"
    if config.exists():
        data = json.loads(config.read_text(encoding="utf-8"))
        if "chat_template" in data:   # transformers reads the .jinja first; keep one source
            del data["chat_template"]
            _write_atomic(config, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    path = model_dir / TEMPLATE_FILE
    _write_atomic(path, template)
    return path
