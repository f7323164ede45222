"""``dimension_targets`` on every route: read them, apply them to the prompt, say what was applied.

    OpenAI chat         top-level ``dimension_targets`` (the openai client's ``extra_body``); the LAST
                        user message is steered, as :func:`amopo.steering.conditioned_messages` does
                        (with the system turn of a style that trained with one)
    OpenAI completions  top-level ``dimension_targets``; the prompt text is the user text: it becomes
                        prefix + separator + prompt, as plain text. Completions never apply the
                        chat template, steered or not, so the model sees the chat-turn form
                        training used only through the chat route; token-id prompts cannot be steered
    KServe v1 / v2      ``parameters.dimension_targets``, as completions (raw text in). v2 parameter
                        values are scalars, so there it is a JSON string of the object

Targets are ``{dimension: level}`` (null for a holistic dimension) checked against the model's
conditioning spec (``amopo_conditioning.json``, loaded with the model). Prefix, separator and order
are those of the prompt style the spec records (``amopo`` when it names none), never another. Anything the model cannot
express is a RequestError (400, param ``dimension_targets``) whose message names what the model
steers. No targets, null or {} leave the prompt exactly as sent and report None.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any

from amopo.data.prompts import steered_user_text
from amopo.errors import SteeringError
from amopo.serving.errors import RequestError
from amopo.steering import applied_targets, check_targets, conditioned_messages

PARAM = "dimension_targets"


def _bad(message: str) -> RequestError:
    return RequestError(message, param=PARAM, code="invalid_dimension_targets")


@contextmanager
def _as_bad_request():
    """SteeringError inside → RequestError 400 on ``dimension_targets`` (the message is kept)."""
    try:
        yield
    except SteeringError as exc:
        raise _bad(str(exc)) from None


def parse_targets(value: Any, *, json_string: bool = False) -> dict | None:
    """The targets of a request field: an object or null (with ``json_string``, also a JSON string of one)."""
    with _as_bad_request():
        if json_string and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise SteeringError(f"{PARAM}: not a JSON object ({exc.msg}); send e.g. "
                                    f"'{{\"verbosity\": 1}}'") from None
        return check_targets(value) or None


def steer_chat(spec: dict | None, messages: list[dict], targets: dict | None) -> tuple[list[dict], dict | None]:
    """(the messages with the last user turn steered, the applied targets or None)."""
    with _as_bad_request():
        return conditioned_messages(spec, messages, targets), applied_targets(spec, targets)


def steer_text(spec: dict | None, text: str, targets: dict | None) -> tuple[str, dict | None]:
    """(the raw prompt text with the prefix before it, the applied targets or None)."""
    with _as_bad_request():
        return steered_user_text(spec, targets, text), applied_targets(spec, targets)


def steer_prompts(spec: dict | None, prompts: list[str | list[int]], targets: dict | None
                  ) -> tuple[list[str | list[int]], dict | None]:
    """(raw prompts, each steered as :func:`steer_text`, the applied targets or None). Token-id
    prompts pass unchanged without targets and are refused with them: the prefix is text."""
    if not targets:
        return prompts, None
    if any(not isinstance(p, str) for p in prompts):
        raise _bad(f"{PARAM} need text prompts (the prefix is text put before the prompt); send the prompt "
                   "as a string, not token ids")
    steered = [steer_text(spec, p, targets) for p in prompts]
    return [text for text, _ in steered], steered[0][1]
