"""Dimension-conditioned prompts and chat rendering.

For dimension k the user text becomes x*_k = f(x, d_k): a one-sentence instruction naming the
dimension, its description, its rating scale and a target score, placed before the user text in
the user turn; then the model's chat template is applied. "overall" gets a holistic instruction
with no score. The target score shown is the CHOSEN response's score on k (``score_source=
"chosen"``, the AMoPO recipe); ``"scale-max"`` shows the top of the scale instead, the level one
would request at inference time.

The wording, separator, order of several prefixes and any system turn are a prompt style
(:mod:`amopo.data.prompt_styles`): ``amopo``, this project's, or ``authors``, the released code's,
token for token. ``accumulate=True`` reproduces the authors' released preprocessing, which by
accident prefixed dimension k with the instructions of dimensions 1..k (in the ``authors`` style
exactly as they did: newest first, P_k … P_1 x); it exists only for parity runs.

At inference the same prefixes steer the model (:func:`steered_user_text`): the trained model
folder carries its conditioning spec (:func:`conditioning_spec`, ``amopo_conditioning.json``), so
training, evaluation, serving and any client build the same x*_k. One requested dimension gives
exactly its training prefix at the requested level; several give their prefixes joined as the
style accumulates them (``amopo``: the model's dimension order; ``authors``: newest first); none
gives the plain prompt. The style a spec records decides everything; a spec that names none is
``amopo``.

Tokenizers without a chat template get ``"User: {text}\\nAssistant: "`` (after the bos token, if
any) and the eos token after the response.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from amopo.data.dimensions import Dimension
from amopo.data.prompt_styles import AMOPO, DEFAULT_STYLE, STYLES, PromptStyle
from amopo.data.records import PreferencePair
from amopo.errors import ModelError, SteeringError

# The amopo style's wording (part of the tokenisation cache key, as every style's is).
SCORED_PREFIX = AMOPO.scored_prefix
HOLISTIC_PREFIX = AMOPO.holistic_prefix
PREFIX_SEPARATOR = AMOPO.separator
ACCUMULATE_SEPARATOR = AMOPO.join
FALLBACK_PROMPT = "User: {text}\nAssistant: "
SCORE_SOURCES = ("chosen", "scale-max")
# The newest prefix version this package reads; a spec records its style's (amopo 1, authors 2).
PREFIX_VERSION = max(s.version for s in STYLES.values())
CONDITIONING_FILE = "amopo_conditioning.json"
PLACEMENT = "user turn: prefix, separator, then the user text"


def placement(style: PromptStyle) -> str:
    """Where x*_k goes, in words (recorded in the spec for people; code reads the style's fields)."""
    if style.system is None:
        return PLACEMENT
    return "system turn with the recorded system prompt; then the user turn: prefix, separator, then the user text"


def scored_names(dims: Sequence[Dimension]) -> str:
    """The scored dimensions' names, comma-separated with spaces for underscores: the list a holistic
    prefix may name (the ``authors`` style's "integrating the dimensions of …")."""
    return ", ".join(d.name.replace("_", " ") for d in dims if d.scored)


def dimension_prefix(dim: Dimension, score: float | None, style: PromptStyle = AMOPO, *,
                     dimensions: str = "") -> str:
    """The instruction for one dimension in ``style``; ``score`` is ignored for a holistic
    dimension, whose prefix may list ``dimensions`` (:func:`scored_names`)."""
    name = dim.name.replace("_", " ") if style.spaced_names else dim.name
    if not dim.scored:
        return style.holistic_prefix.format(name=name, description=dim.description, dimensions=dimensions)
    if score is None or math.isnan(score):
        raise ValueError(f"dimension '{dim.name}' needs a score for its prefix")
    return style.scored_prefix.format(name=name, score=f"{score:g}", low=f"{dim.low:g}", high=f"{dim.high:g}",
                                      description=dim.description)


def joined(prefixes: Sequence[str], style: PromptStyle = AMOPO) -> str:
    """Several dimensions' prefixes, given in the model's dimension order, as one prefix in the
    style's order (``authors``: newest first) and with its join."""
    return style.join.join(reversed(prefixes) if style.newest_first else prefixes)


def shown_scores(pair: PreferencePair, dims: Sequence[Dimension], score_source: str = "chosen") -> list[float | None]:
    """The score each dimension's prefix shows (None for holistic dimensions)."""
    if score_source not in SCORE_SOURCES:
        raise ValueError(f"score_source must be one of {SCORE_SOURCES}, got {score_source!r}")
    out: list[float | None] = []
    for dim in dims:
        if not dim.scored:
            out.append(None)
        elif score_source == "scale-max":
            out.append(float(dim.high))
        else:
            out.append(pair.score("chosen", dim.name))
    return out


def dimension_prefixes(dims: Sequence[Dimension], scores: Sequence[float | None], *,
                       accumulate: bool = False, style: PromptStyle = AMOPO) -> list[str]:
    """One prefix per dimension (or, with ``accumulate``, prefix_k = prefixes 1..k :func:`joined`:
    P_1 … P_k in the amopo style, P_k … P_1 in the authors')."""
    names = scored_names(dims)
    own = [dimension_prefix(d, s, style, dimensions=names) for d, s in zip(dims, scores, strict=True)]
    if not accumulate:
        return own
    return [joined(own[: k + 1], style) for k in range(len(own))]


def conditioned_text(prefix: str, user_text: str, style: PromptStyle = AMOPO) -> str:
    """The user turn of x*_k: the dimension instruction, the style's separator, the user text."""
    return f"{prefix}{style.separator}{user_text}"


def conditioning_spec(dims: Sequence[Dimension], *, accumulate: bool = False, style: PromptStyle = AMOPO) -> dict:
    """Everything a consumer needs to rebuild the x*_k of training: the dimensions (names, scales,
    descriptions, in the model's order), the prompt style with its wording and version, the
    placement, the order of several prefixes and the system turn (None: none)."""
    return {"prefix_version": style.version, "prompt_style": style.name, "dimensions": [d.to_json() for d in dims],
            "scored_prefix": style.scored_prefix, "holistic_prefix": style.holistic_prefix,
            "placement": placement(style), "separator": style.separator, "join": style.join,
            "order": "newest first" if style.newest_first else "model order", "system": style.system,
            "accumulate_prefixes": accumulate}


def spec_style(spec: dict) -> PromptStyle:
    """The style a conditioning spec records (``amopo`` when it names none), with the spec's own
    wording, separators and system turn. SteeringError for a style this package does not know."""
    name = spec.get("prompt_style", DEFAULT_STYLE)
    base = STYLES.get(name) if isinstance(name, str) else None
    if base is None:
        raise SteeringError(f"conditioning spec: unknown prompt_style {name!r}; this amopo knows "
                            f"{', '.join(STYLES)} (upgrade amopo to steer this model)")
    return dataclasses.replace(base, scored_prefix=spec["scored_prefix"], holistic_prefix=spec["holistic_prefix"],
                               separator=spec.get("separator", base.separator), join=spec.get("join", base.join),
                               system=spec.get("system", base.system))


def steering_system(spec: dict | None) -> str | None:
    """The system prompt the model's style put before every training prompt (None: none)."""
    return spec_style(spec).system if spec else None


def _allowed(dims: Sequence[Dimension]) -> str:
    return "; ".join(f"{d.name} ({d.low:g} to {d.high:g})" if d.scored else f"{d.name} (holistic: null)"
                     for d in dims)


def steering_prefix(spec: dict | None, targets: dict) -> str | None:
    """The prefix for the requested ``targets`` ({dimension: level, or None for a holistic one}),
    or None when nothing is requested. Raises SteeringError naming what is allowed."""
    if not targets:
        return None
    if not spec:
        raise SteeringError("this model has no dimension conditioning (no amopo_conditioning.json in its folder); "
                            "dimension_targets cannot be applied")
    if not isinstance(targets, dict):
        raise SteeringError(f"dimension_targets must be an object of dimension → level, got {type(targets).__name__}")
    style = spec_style(spec)
    dims = [Dimension.from_json(d) for d in spec["dimensions"]]
    by_name = {d.name: d for d in dims}
    allowed = _allowed(dims)
    unknown = sorted(str(n) for n in targets if n not in by_name)
    if unknown:
        raise SteeringError(f"unknown dimension(s) {', '.join(unknown)}; this model steers: {allowed}")
    parts = []
    for dim in dims:
        if dim.name not in targets:
            continue
        level = targets[dim.name]
        if not dim.scored:
            if level is not None:
                raise SteeringError(f"dimension '{dim.name}' is holistic and takes no level (use null); "
                                    f"this model steers: {allowed}")
        elif isinstance(level, bool) or not isinstance(level, (int, float)) or math.isnan(level) \
                or not dim.low <= level <= dim.high:
            raise SteeringError(f"dimension '{dim.name}': level {level!r} is not a number from {dim.low:g} to "
                                f"{dim.high:g}; this model steers: {allowed}")
        parts.append(dimension_prefix(dim, None if level is None else float(level), style,
                                      dimensions=scored_names(dims)))
    return joined(parts, style)


def steered_user_text(spec: dict | None, targets: dict | None, user_text: str) -> str:
    """The user turn with the prefix of ``targets`` before ``user_text``, as training placed it (in
    the spec's style); ``user_text`` unchanged when no target is requested."""
    prefix = steering_prefix(spec, targets or {})
    return user_text if prefix is None else conditioned_text(prefix, user_text, spec_style(spec))


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _messages(tokenizer, user_text: str, system: str | None) -> list[dict]:
    """[system turn if ``system``] + the user turn; ModelError when a system turn has no template."""
    if system is None:
        return [{"role": "user", "content": user_text}]
    if not has_chat_template(tokenizer):
        raise ModelError(f"the prompt style puts a system turn ({system!r}) before the user turn, and the "
                         f"tokenizer {getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__} has "
                         "no chat template to render it; use a model with a chat template or prompt_style amopo")
    return [{"role": "system", "content": system}, {"role": "user", "content": user_text}]


def render_prompt(tokenizer, user_text: str, system: str | None = None) -> str:
    """The text the model sees before its answer (chat template with the generation prompt), after
    the system turn ``system`` when one is given (the ``authors`` style's)."""
    messages = _messages(tokenizer, user_text, system)
    if not has_chat_template(tokenizer):
        return (tokenizer.bos_token or "") + FALLBACK_PROMPT.format(text=user_text)
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _special_tokens(tokenizer) -> set[str]:
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return set(getattr(tokenizer, "all_special_tokens", [])) | {t.content for t in added.values() if t.special}


def render_response(tokenizer, user_text: str, response: str, system: str | None = None) -> str:
    """The assistant turn as the template renders it after ``render_prompt``: the response plus the
    template's end-of-turn text. Found as the suffix of the full conversation past the prompt.

    Whitespace the template writes after its final special token (ChatML's newline after
    ``<|im_end|>``) is dropped: generation stops at that token, so it is never predicted."""
    if not has_chat_template(tokenizer):
        return response + (tokenizer.eos_token or "")
    prompt = render_prompt(tokenizer, user_text, system)
    full = tokenizer.apply_chat_template(_messages(tokenizer, user_text, system)
                                         + [{"role": "assistant", "content": response}], tokenize=False)
    if not full.startswith(prompt):
        raise ModelError("the chat template does not render the assistant turn as a continuation of the "
                         "generation prompt; cannot split prompt and response tokens")
    suffix = full[len(prompt):]
    stripped = suffix.rstrip()
    if stripped != suffix and any(stripped.endswith(t) for t in _special_tokens(tokenizer) if t):
        return stripped
    return suffix
