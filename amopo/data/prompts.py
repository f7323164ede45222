"""Dimension-conditioned prompts and chat rendering.

For dimension k the user text becomes x*_k = f(x, d_k): a one-sentence instruction naming the
dimension, its description, its rating scale and a target score, placed before the user text in
the user turn; then the model's chat template is applied. "overall" gets a holistic instruction
with no score. The target score shown is the CHOSEN response's score on k (``score_source=
"chosen"``, the AMoPO recipe); ``"scale-max"`` shows the top of the scale instead, the level one
would request at inference time.

``accumulate=True`` reproduces the authors' released preprocessing, which by accident prefixed
dimension k with the instructions of dimensions 1..k; it exists only for parity runs.

Tokenizers without a chat template get ``"User: {text}\\nAssistant: "`` (after the bos token, if
any) and the eos token after the response.
"""

from __future__ import annotations

import math
from typing import Sequence

from amopo.data.dimensions import Dimension
from amopo.data.records import PreferencePair
from amopo.errors import ModelError

# Part of the tokenisation cache key: changing a wording invalidates cached tokens.
SCORED_PREFIX = "Respond at {name} level {score} on a scale of {low} to {high} ({description})."
HOLISTIC_PREFIX = "Respond with the best {name} quality: {description}."
PREFIX_SEPARATOR = "\n\n"
ACCUMULATE_SEPARATOR = "\n"
FALLBACK_PROMPT = "User: {text}\nAssistant: "
SCORE_SOURCES = ("chosen", "scale-max")


def dimension_prefix(dim: Dimension, score: float | None) -> str:
    """The instruction for one dimension; ``score`` is ignored for a holistic dimension."""
    name = dim.name.replace("_", " ")
    if not dim.scored:
        return HOLISTIC_PREFIX.format(name=name, description=dim.description)
    if score is None or math.isnan(score):
        raise ValueError(f"dimension '{dim.name}' needs a score for its prefix")
    return SCORED_PREFIX.format(name=name, score=f"{score:g}", low=f"{dim.low:g}", high=f"{dim.high:g}",
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
