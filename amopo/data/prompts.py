"""Dimension-conditioned prompts and chat rendering.

For dimension k the user text becomes x*_k = f(x, d_k): a one-sentence instruction naming the
dimension, its description, its rating scale and a target score, placed before the user text in
the user turn; then the model's chat template is applied. "overall" gets a holistic instruction
with no score. The target score shown is the CHOSEN response's score on k (``score_source=
"chosen"``, the AMoPO recipe); ``"scale-max"`` shows the top of the scale instead, the level one
would request at inference time.

``accumulate=True`` reproduces the authors' released preprocessing, which by accident prefixed
dimension k with the instructions of dimensions 1..k; it exists only for parity runs.

At inference the same prefixes steer the model (:func:`steered_user_text`): the trained model
folder carries its conditioning spec (:func:`conditioning_spec`, ``amopo_conditioning.json``), so
training, evaluation, serving and any client build the same x*_k. One requested dimension gives
exactly its training prefix at the requested level; several give their prefixes joined in the
model's dimension order (the form of the released preprocessing); none gives the plain prompt.

Tokenizers without a chat template get ``"User: {text}\\nAssistant: "`` (after the bos token, if
any) and the eos token after the response.
"""

from __future__ import annotations

import math
from typing import Sequence

from amopo.data.dimensions import Dimension
from amopo.data.records import PreferencePair
from amopo.errors import ModelError, SteeringError

# Part of the tokenisation cache key: changing a wording invalidates cached tokens.
SCORED_PREFIX = "Respond at {name} level {score} on a scale of {low} to {high} ({description})."
HOLISTIC_PREFIX = "Respond with the best {name} quality: {description}."
PREFIX_SEPARATOR = "\n\n"
ACCUMULATE_SEPARATOR = "\n"
FALLBACK_PROMPT = "User: {text}\nAssistant: "
SCORE_SOURCES = ("chosen", "scale-max")
# Version of the wording above and of how prefixes are placed; recorded in every conditioning spec.
PREFIX_VERSION = 1
CONDITIONING_FILE = "amopo_conditioning.json"
PLACEMENT = "user turn: prefix, separator, then the user text"


def dimension_prefix(dim: Dimension, score: float | None, *, scored_prefix: str = SCORED_PREFIX,
                     holistic_prefix: str = HOLISTIC_PREFIX) -> str:
    """The instruction for one dimension; ``score`` is ignored for a holistic dimension."""
    name = dim.name.replace("_", " ")
    if not dim.scored:
        return holistic_prefix.format(name=name, description=dim.description)
    if score is None or math.isnan(score):
        raise ValueError(f"dimension '{dim.name}' needs a score for its prefix")
    return scored_prefix.format(name=name, score=f"{score:g}", low=f"{dim.low:g}", high=f"{dim.high:g}",
                                description=dim.description)


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
                       accumulate: bool = False) -> list[str]:
    """One prefix per dimension (or, with ``accumulate``, prefix_k = prefix_1 … prefix_k)."""
    own = [dimension_prefix(d, s) for d, s in zip(dims, scores, strict=True)]
    if not accumulate:
        return own
    return [ACCUMULATE_SEPARATOR.join(own[: k + 1]) for k in range(len(own))]


def conditioned_text(prefix: str, user_text: str) -> str:
    """The user turn of x*_k: the dimension instruction, then the user text."""
    return f"{prefix}{PREFIX_SEPARATOR}{user_text}"


def conditioning_spec(dims: Sequence[Dimension], *, accumulate: bool = False) -> dict:
    """Everything a consumer needs to rebuild the x*_k of training: the dimensions (names, scales,
    descriptions, in the model's order), the prefix wording and its version, and the placement."""
    return {"prefix_version": PREFIX_VERSION, "dimensions": [d.to_json() for d in dims],
            "scored_prefix": SCORED_PREFIX, "holistic_prefix": HOLISTIC_PREFIX, "placement": PLACEMENT,
            "separator": PREFIX_SEPARATOR, "join": ACCUMULATE_SEPARATOR, "accumulate_prefixes": accumulate}


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
        parts.append(dimension_prefix(dim, None if level is None else float(level),
                                      scored_prefix=spec["scored_prefix"], holistic_prefix=spec["holistic_prefix"]))
    return spec["join"].join(parts)


def steered_user_text(spec: dict | None, targets: dict | None, user_text: str) -> str:
    """The user turn with the prefix of ``targets`` before ``user_text``, as training placed it;
    ``user_text`` unchanged when no target is requested."""
    prefix = steering_prefix(spec, targets or {})
    return user_text if prefix is None else f"{prefix}{(spec or {}).get('separator', PREFIX_SEPARATOR)}{user_text}"


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer, user_text: str) -> str:
    """The text the model sees before its answer (chat template with the generation prompt)."""
    if not has_chat_template(tokenizer):
        return (tokenizer.bos_token or "") + FALLBACK_PROMPT.format(text=user_text)
    return tokenizer.apply_chat_template([{"role": "user", "content": user_text}],
                                         add_generation_prompt=True, tokenize=False)


def _special_tokens(tokenizer) -> set[str]:
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return set(getattr(tokenizer, "all_special_tokens", [])) | {t.content for t in added.values() if t.special}


def render_response(tokenizer, user_text: str, response: str) -> str:
    """The assistant turn as the template renders it after ``render_prompt``: the response plus the
    template's end-of-turn text. Found as the suffix of the full conversation past the prompt.

    Whitespace the template writes after its final special token (ChatML's newline after
    ``<|im_end|>``) is dropped: generation stops at that token, so it is never predicted."""
    if not has_chat_template(tokenizer):
        return response + (tokenizer.eos_token or "")
    prompt = render_prompt(tokenizer, user_text)
    full = tokenizer.apply_chat_template([{"role": "user", "content": user_text},
                                          {"role": "assistant", "content": response}], tokenize=False)
    if not full.startswith(prompt):
        raise ModelError("the chat template does not render the assistant turn as a continuation of the "
                         "generation prompt; cannot split prompt and response tokens")
    suffix = full[len(prompt):]
    stripped = suffix.rstrip()
    if stripped != suffix and any(stripped.endswith(t) for t in _special_tokens(tokenizer) if t):
        return stripped
    return suffix
