"""The smoke test of a deployment: one real chat completion through its OpenAI-compatible route.

Passes when the endpoint answers HTTP 200 within the timeout with a non-empty assistant message;
otherwise raises SmokeTestError naming the URL and what came back. Works against `amopo serve` and
KServe's Hugging Face runtime alike (both serve ``{url}/openai/v1/chat/completions``).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

from amopo.errors import AmopoError

DEFAULT_PROMPT = "In one sentence: what is a preference dataset used for?"
STEER_PROMPTS = ("Why is the sky blue?", "What does a compiler do?", "How do vaccines work?",
                 "What is photosynthesis?")


class SmokeTestError(AmopoError):
    """The deployed endpoint did not answer a plain request correctly."""


def _chat(url: str, body: dict, *, api_key_env: str | None, timeout_s: float, attempts: int) -> tuple[dict, float]:
    """POST ``body`` to the chat route, retrying unreachable endpoints; (answer, latency). An HTTP
    error status raises SmokeTestError at once, with the route and the body's start."""
    route = f"{url.rstrip('/')}/openai/v1/chat/completions"
    headers = {"Content-Type": "application/json"}
    if api_key_env and os.environ.get(api_key_env):
        headers["Authorization"] = f"Bearer {os.environ[api_key_env]}"
    last = ""
    for attempt in range(attempts):
        start = time.monotonic()
        try:
            request = urllib.request.Request(route, data=json.dumps(body).encode(), headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                return json.loads(resp.read()), time.monotonic() - start
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace")
            raise SmokeTestError(f"smoke test: {route} answered HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(min(2.0 * 2 ** attempt, 10.0))
    raise SmokeTestError(f"smoke test: {route} unreachable after {attempts} tries ({last})")


def smoke_test(url: str, model_name: str, *, prompt: str = DEFAULT_PROMPT, max_tokens: int = 32,
               api_key_env: str | None = None, timeout_s: float = 120.0, attempts: int = 3) -> dict:
    """Send one chat completion to ``url``; returns reply text, latency, token counts and the route."""
    body = {"model": model_name, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0.0}
    answer, latency = _chat(url, body, api_key_env=api_key_env, timeout_s=timeout_s, attempts=attempts)
    route = f"{url.rstrip('/')}/openai/v1/chat/completions"
    reply = ((answer.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
    if not reply.strip():
        raise SmokeTestError(f"smoke test: {route} answered with an empty message: {json.dumps(answer)[:300]}")
    usage = answer.get("usage") or {}
    return {"ok": True, "route": route, "prompt": prompt, "reply": reply, "latency_s": round(latency, 3),
            "prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens")}


def steering_lengths(url: str, model_name: str, *, dimension: str = "verbosity", levels: tuple = (0, 4),
                     prompts=STEER_PROMPTS, max_tokens: int = 48, api_key_env: str | None = None,
                     timeout_s: float = 120.0) -> dict:
    """Mean completion tokens of greedy answers to ``prompts`` with ``dimension_targets`` set to each
    of ``levels`` (the endpoint's steering, measured); ``{"skipped": reason}`` when the served model
    does not steer ``dimension`` (its 400 says so). The targets go in ``chat_template_kwargs``, the
    form every engine takes: `amopo serve` applies them itself, and vLLM, SGLang and KServe's Hugging
    Face runtime pass them to the model's chat template, which `amopo train` compiles to steer
    (:mod:`amopo.chat_template`)."""
    means = {}
    for level in levels:
        tokens = []
        for prompt in prompts:
            body = {"model": model_name, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                    "temperature": 0.0, "chat_template_kwargs": {"dimension_targets": {dimension: level}}}
            try:
                answer, _ = _chat(url, body, api_key_env=api_key_env, timeout_s=timeout_s, attempts=3)
            except SmokeTestError as exc:
                if "HTTP 400" in str(exc):
                    return {"skipped": str(exc)}
                raise
            tokens.append((answer.get("usage") or {}).get("completion_tokens") or 0)
        means[level] = sum(tokens) / len(tokens)
    return {"dimension": dimension, "mean_completion_tokens": means, "prompts": len(prompts),
            "max_tokens": max_tokens}
