"""Validation of OpenAI-style request bodies into what the engine needs.

Field types are checked against the ``openai`` package's own request types
(``openai.types.chat.completion_create_params`` and ``openai.types.completion_create_params``,
strict mode); the shapes pydantic cannot check eagerly (messages, prompt, stop, stream) and the
semantics are checked here. Every failure is a RequestError naming the parameter.

Supported: model, messages / prompt, max_tokens (max_completion_tokens), temperature, top_p, stop,
seed, stream, stream_options.include_usage, user, and the project's extension ``dimension_targets``
(top level, as vLLM and KServe take extension fields; on chat also as ``chat_template_kwargs:
{"dimension_targets": ...}``, the form that steers the model's own chat template on vLLM and SGLang;
checked to be an object or null here and against the model in ``amopo.serving.steering``). Log-probabilities (``amopo.serving.logprobs``):
on completions ``logprobs`` = N (an integer 0..20) and ``echo``, with ``max_tokens: 0`` allowed
with echo (score the prompt only); on chat ``logprobs: true`` with ``top_logprobs`` = N (0..20).
N is capped at 20 (OpenAI's chat cap; its legacy API stops at 5, lm-eval asks for 1). Streaming
with log-probabilities is refused (400): they come with the whole answer. Accepted only at their
neutral value: n=1, echo off on chat, best_of=1, presence/frequency_penalty=0, empty suffix.
Anything else is an unsupported parameter (400).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import Any

from amopo.serving.engine import Sampling
from amopo.serving.errors import RequestError
from amopo.serving.logprobs import MAX_LOGPROBS
from amopo.serving.steering import parse_targets

_COMMON = {"model", "max_tokens", "temperature", "top_p", "stop", "seed", "stream", "stream_options", "user",
           "dimension_targets"}
CHAT_PARAMS = _COMMON | {"messages", "max_completion_tokens", "logprobs", "top_logprobs", "chat_template_kwargs"}
COMPLETION_PARAMS = _COMMON | {"prompt", "logprobs", "echo"}
_LOGPROB_PARAMS = {"logprobs", "top_logprobs", "echo"}   # checked here, not by the openai types
# Parameters whose only supported value is the one that changes nothing.
_NEUTRAL: dict[str, tuple] = {"n": (None, 1), "top_logprobs": (None, 0),
                              "presence_penalty": (None, 0), "frequency_penalty": (None, 0),
                              "echo": (None, False), "best_of": (None, 1), "suffix": (None, ""),
                              "parallel_tool_calls": (None,), "logit_bias": (None,)}
CHAT_ROLES = {"system", "developer", "user", "assistant"}
MAX_STOP = 4
MAX_PROMPTS = 64


@dataclass(frozen=True)
class ChatParams:
    model: str
    messages: list[dict[str, str]]
    sampling: Sampling
    max_tokens_param: str
    stream: bool
    include_usage: bool
    dimension_targets: dict | None = None
    logprobs: int | None = None     # top-N of each generated token's entry; None: no logprobs


@dataclass(frozen=True)
class CompletionParams:
    model: str
    prompts: list[str | list[int]]
    sampling: Sampling
    stream: bool
    include_usage: bool
    dimension_targets: dict | None = None
    logprobs: int | None = None     # top-N per position; None: no logprobs
    echo: bool = False              # the prompt (and with logprobs its entries) before the completion


@functools.cache
def _adapters():
    from openai.types import completion_create_params
    from openai.types.chat import completion_create_params as chat_create_params
    from pydantic import TypeAdapter

    return {"chat": TypeAdapter(chat_create_params.CompletionCreateParamsBase),
            "completion": TypeAdapter(completion_create_params.CompletionCreateParamsBase)}


def warm() -> None:
    """Build the validators now (about a second) rather than on the first request."""
    _adapters()


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")   # JSON is UTF-8 (RFC 8259); json.loads(bytes) would guess UTF-16/32
    except UnicodeDecodeError:
        raise RequestError("the request body is not UTF-8 text") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(f"the request body is not valid JSON ({exc.msg} at line {exc.lineno} "
                           f"column {exc.colno})") from None
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def _is_neutral(key: str, value) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):  # False == 0 in Python; compare booleans only with booleans
        return value is False and any(v is False for v in _NEUTRAL[key])
    return any(value == v for v in _NEUTRAL[key] if v is not None and not isinstance(v, bool))


def _check_supported(body: dict, supported: set[str]) -> None:
    for key, value in body.items():
        if key in supported:
            continue
        if key in _NEUTRAL:
            if _is_neutral(key, value):
                continue
            allowed = " or ".join(json.dumps(v) for v in _NEUTRAL[key] if v is not None) or "null"
            raise RequestError(f"unsupported parameter '{key}': this server supports only {allowed}",
                               param=key, code="unsupported_parameter")
        raise RequestError(f"unsupported parameter '{key}'", param=key, code="unsupported_parameter")


def _check_types(kind: str, body: dict, skip: set[str]) -> None:
    from pydantic import ValidationError

    subset = {k: v for k, v in body.items() if k not in skip}
    subset.setdefault("model", "x")
    if kind == "chat":
        subset["messages"] = []
    else:
        subset["prompt"] = ""
    try:
        _adapters()[kind].validate_python(subset, strict=True)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = str(err["loc"][0]) if err["loc"] else None
        raise RequestError(f"invalid '{param}': {err['msg']} (got {subset.get(param)!r})", param=param) from None


def _model(body: dict) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("'model' is required and must be a non-empty string", param="model")
    return model


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _stream(body: dict) -> tuple[bool, bool]:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise RequestError(f"invalid 'stream': expected true or false, got {stream!r}", param="stream")
    options = body.get("stream_options")
    if options is None:
        return bool(stream), False
    if not stream:
        raise RequestError("'stream_options' is only allowed with stream=true", param="stream_options")
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise RequestError("invalid 'stream_options': expected {\"include_usage\": true|false}",
                           param="stream_options")
    return True, bool(options.get("include_usage", False))


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise RequestError(f"invalid 'stop': expected a string or a list of strings, got {stop!r}", param="stop")
    if len(items) > MAX_STOP:
        raise RequestError(f"invalid 'stop': at most {MAX_STOP} sequences, got {len(items)}", param="stop")
    return tuple(s for s in items if s)


def _sampling(body: dict, max_tokens_param: str) -> Sampling:
    temperature = body.get("temperature")
    temperature = 1.0 if temperature is None else float(temperature)
    if not 0.0 <= temperature <= 2.0 or math.isnan(temperature):
        raise RequestError(f"invalid 'temperature': {temperature} is not between 0 and 2", param="temperature")
    top_p = body.get("top_p")
    top_p = 1.0 if top_p is None else float(top_p)
    if not 0.0 < top_p <= 1.0:
        raise RequestError(f"invalid 'top_p': {top_p} is not in (0, 1]", param="top_p")
    seed = body.get("seed")
    max_tokens = body.get(max_tokens_param)
    return Sampling(max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=_stop(body), seed=seed)


def _text_content(content, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise RequestError(f"{where}.content[{j}]: only text parts are supported, got {kind!r}",
                                   param="messages")
            parts.append(part["text"])
        return "".join(parts)
    raise RequestError(f"{where}.content must be a string or a list of text parts, got "
                       f"{type(content).__name__}", param="messages")


def _messages(body: dict) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise RequestError(f"'messages' is required and must be a list, got {type(messages).__name__}",
                           param="messages")
    if not messages:
        raise RequestError("'messages' is empty; send at least one message", param="messages")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise RequestError(f"{where} must be an object with 'role' and 'content'", param="messages")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise RequestError(f"{where}.role {role!r} is not supported (use one of "
                               f"{', '.join(sorted(CHAT_ROLES))})", param="messages")
        if message.get("tool_calls") or message.get("function_call"):
            raise RequestError(f"{where}: tool and function calls are not supported", param="messages")
        if "content" not in message or message["content"] is None:
            raise RequestError(f"{where}.content is required", param="messages")
        out.append({"role": "system" if role == "developer" else role,
                    "content": _text_content(message["content"], where)})
    return out


def _prompts(body: dict) -> list[str | list[int]]:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            items = list(prompt)
        elif all(_is_int(t) for t in prompt):
            items = [list(prompt)]
        elif all(isinstance(p, list) and p and all(_is_int(t) for t in p) for p in prompt):
            items = [list(p) for p in prompt]
        else:
            items = None
        if items is not None:
            if len(items) > MAX_PROMPTS:
                raise RequestError(f"'prompt' has {len(items)} prompts; at most {MAX_PROMPTS} per request",
                                   param="prompt")
            return items
    raise RequestError("'prompt' is required: a string, a list of strings, a list of token ids or a list of "
                       "lists of token ids", param="prompt")


def _top_n(value, param: str) -> int:
    if not _is_int(value) or value < 0:
        raise RequestError(f"invalid '{param}': expected an integer from 0 to {MAX_LOGPROBS}, got {value!r}",
                           param=param)
    if value > MAX_LOGPROBS:
        raise RequestError(f"invalid '{param}': {value} is above this server's limit of {MAX_LOGPROBS} most "
                           "likely tokens per position", param=param, code="logprobs_exceeded")
    return value


def _flag(body: dict, param: str) -> bool:
    value = body.get(param)
    if value is not None and not isinstance(value, bool):
        raise RequestError(f"invalid '{param}': expected true or false, got {value!r}", param=param)
    return bool(value)


def _no_stream(stream: bool, param: str) -> None:
    if stream:
        raise RequestError(f"'{param}' cannot be combined with stream=true: this server returns "
                           "log-probabilities with the whole answer; send stream=false", param=param,
                           code="unsupported_parameter")


def _chat_logprobs(body: dict, stream: bool) -> int | None:
    wanted = _flag(body, "logprobs")
    top = body.get("top_logprobs")
    if top is not None:
        top = _top_n(top, "top_logprobs")
        if not wanted:
            raise RequestError("'top_logprobs' needs logprobs=true", param="top_logprobs")
    if not wanted:
        return None
    _no_stream(stream, "logprobs")
    return top or 0


def parse_chat(body: dict[str, Any]) -> ChatParams:
    _check_supported(body, CHAT_PARAMS)
    model = _model(body)
    messages = _messages(body)
    stream, include_usage = _stream(body)
    _check_types("chat", body, skip={"messages", "stop", "stream", "stream_options", "dimension_targets",
                                     "chat_template_kwargs"} | _LOGPROB_PARAMS)
    logprobs = _chat_logprobs(body, stream)
    max_tokens_param = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    return ChatParams(model, messages, _sampling(body, max_tokens_param), max_tokens_param, stream, include_usage,
                      parse_targets(_chat_targets(body)), logprobs)


def _chat_targets(body: dict[str, Any]) -> Any:
    """The chat request's targets: top-level ``dimension_targets`` or ``chat_template_kwargs.dimension_targets``
    (the form vLLM's and SGLang's OpenAI servers pass to the chat template, which a model trained by amopo
    carries: ``amopo.chat_template``). Only ``dimension_targets`` is taken inside ``chat_template_kwargs``:
    this server renders the model's template itself and has no other template variable to set."""
    kwargs = body.get("chat_template_kwargs")
    if kwargs is None:
        return body.get("dimension_targets")
    if not isinstance(kwargs, dict):
        raise RequestError(f"'chat_template_kwargs' must be an object (e.g. {{\"dimension_targets\": "
                           f"{{\"verbosity\": 1}}}}), got {type(kwargs).__name__}", param="chat_template_kwargs")
    other = sorted(str(k) for k in kwargs if k != "dimension_targets")
    if other:
        raise RequestError(f"unsupported chat_template_kwargs {', '.join(other)}: this server takes only "
                           "dimension_targets there", param="chat_template_kwargs", code="unsupported_parameter")
    if "dimension_targets" in kwargs and body.get("dimension_targets") is not None:
        raise RequestError("dimension_targets given both at the top level and in chat_template_kwargs; send one",
                           param="dimension_targets")
    return kwargs.get("dimension_targets", body.get("dimension_targets"))


def parse_completion(body: dict[str, Any]) -> CompletionParams:
    _check_supported(body, COMPLETION_PARAMS)
    model = _model(body)
    prompts = _prompts(body)
    stream, include_usage = _stream(body)
    _check_types("completion", body, skip={"prompt", "stop", "stream", "stream_options", "dimension_targets"}
                 | _LOGPROB_PARAMS)
    echo = _flag(body, "echo")
    logprobs = None if body.get("logprobs") is None else _top_n(body["logprobs"], "logprobs")
    if logprobs is not None:
        _no_stream(stream, "logprobs")
    return CompletionParams(model, prompts, _sampling(body, "max_tokens"), stream, include_usage,
                            parse_targets(body.get("dimension_targets")), logprobs, echo)


SAMPLING_PARAMS = {"max_tokens", "temperature", "top_p", "stop", "seed"}


def parse_sampling(params: dict[str, Any], *, default_temperature: float = 0.0) -> Sampling:
    """Generation settings from a plain mapping (KServe v1/v2 ``parameters``); greedy unless told."""
    if not isinstance(params, dict):
        raise RequestError(f"parameters must be an object, got {type(params).__name__}")
    _check_supported(params, SAMPLING_PARAMS)
    _check_types("completion", params, skip={"stop"})
    return _sampling({"temperature": default_temperature, **params}, "max_tokens")
