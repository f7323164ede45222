"""Prompt styles: the wording and the placement of the dimension-conditioned prompt x*_k.

``amopo`` (the default) is this project's wording: one sentence per dimension naming its own scale
and the target score, a blank line, then the user text; accumulated prefixes (``accumulate_prefixes``)
read P_1 … P_k, one per line.

``authors`` reproduces the preprocessing of the AMoPO authors' released code (a LLaMA-Factory fork,
``pairwise_multi_object.py``, run with ``--template qwen``), token for token:

- scored dimension k: their long instruction, naming the dimension as written (underscores kept),
  the same 1–5 rubric for every dimension whatever its own scale, and "the evaluation value of d"
  (d as their integer score columns print it: 4, not 4.0);
- the holistic dimension: their "integrating the dimensions of …" sentence, listing the scored
  dimensions with spaces for underscores (their sentence names helpfulness, correctness,
  instruction following: the list their code conditions on);
- no separator: the instruction runs straight into the user text;
- accumulated (their code rewrote one shared message in place, so dimension k's prompt carries the
  instructions of dimensions 1..k): newest first, P_k … P_1 x, with nothing between them;
- a system turn with LLaMA-Factory's default system prompt of the ``qwen`` template, which their
  records (no system field) always got.

A style is chosen at ``amopo prepare --prompt-style`` and recorded in the prepared manifest and in
the trained model's ``amopo_conditioning.json``; steering and serving rebuild prompts in the style
the spec records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from amopo.errors import ConfigError


@dataclass(frozen=True)
class PromptStyle:
    """How x*_k is written. Format fields: ``scored_prefix`` takes name, score, low, high and
    description; ``holistic_prefix`` takes name, description and dimensions (the scored dimensions'
    names, comma-separated)."""

    name: str
    version: int            # the spec's prefix_version: a reader that knows fewer versions refuses the spec
    scored_prefix: str
    holistic_prefix: str
    separator: str          # between the prefix and the user text
    join: str               # between the prefixes of several dimensions
    newest_first: bool      # several prefixes: the last dimension's first (P_k … P_1)
    spaced_names: bool      # "instruction following" rather than "instruction_following" in scored_prefix
    system: str | None      # the system turn training put before the user turn; None: none added

    def to_json(self) -> dict:
        return asdict(self)


AMOPO = PromptStyle(
    name="amopo", version=1,
    scored_prefix="Respond at {name} level {score} on a scale of {low} to {high} ({description}).",
    holistic_prefix="Respond with the best {name} quality: {description}.",
    separator="\n\n", join="\n", newest_first=False, spaced_names=True, system=None)

# The authors' instruction, character for character (its line breaks, its eight-space indents and
# the spaces before two of its line breaks included).
_AUTHORS_SCORED = (
    "You are an expert in question answering, and you need to focus on the {name} dimension to respond "
    "to me. The evaluation values for this dimension range from 1 to 5, representing \n"
    "        1. **Irrelevant**: No alignment.\n"
    "        2. **Partial Focus**: Addresses one aspect poorly.\n"
    "        3. **Partial Compliance**:\n"
    "        - (1) Meets goals or restrictions, neglecting others.\n"
    "        - (2) Acknowledges both but slight deviations.\n"
    "        4. **Almost There**: Near alignment, minor deviations.\n"
    "        5. **Comprehensive Compliance**: Fully aligns, meets all requirements. \n"
    "        Please provide me with a response based on the evaluation value of {score}.")
_AUTHORS_HOLISTIC = ("You are an expert in question answering, and you need to respond to me by integrating "
                     "the dimensions of {dimensions}")
# LLaMA-Factory's `qwen` template: default_system, used whenever a record has no system prompt.
QWEN_DEFAULT_SYSTEM = "You are a helpful assistant."

AUTHORS = PromptStyle(
    name="authors", version=2, scored_prefix=_AUTHORS_SCORED, holistic_prefix=_AUTHORS_HOLISTIC,
    separator="", join="", newest_first=True, spaced_names=False, system=QWEN_DEFAULT_SYSTEM)

STYLES: dict[str, PromptStyle] = {s.name: s for s in (AMOPO, AUTHORS)}
DEFAULT_STYLE = AMOPO.name


def get_style(name: str, where: str = "option 'prompt_style'") -> PromptStyle:
    """The style called ``name``; ConfigError naming ``where`` and the allowed styles otherwise."""
    style = STYLES.get(name) if isinstance(name, str) else None
    if style is None:
        raise ConfigError(f"{where}: unknown prompt style {name!r}; allowed: {', '.join(STYLES)}")
    return style
