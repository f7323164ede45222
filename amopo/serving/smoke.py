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


class SmokeTestError(AmopoError):
    """The deployed endpoint did not answer a plain request correctly."""


def smoke_test(url: str, model_name: str, *, prompt: str = DEFAULT_PROMPT, max_tokens: int = 32,
               api_key_env: str | None = None, timeout_s: float = 120.0, attempts: int = 3) -> dict:
    """Send one chat completion to ``url``; returns reply text, latency, token counts and the route."""
    route = f"{url.rstrip('/')}/openai/v1/chat/completions"
    body = json.dumps({"model": model_name, "messages": [{"role": "user", "content": prompt}],
                       "max_tokens": max_tokens, "temperature": 0.0}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key_env and os.environ.get(api_key_env):
        headers["Authorization"] = f"Bearer {os.environ[api_key_env]}"
    last = ""
    for attempt in range(attempts):
        start = time.monotonic()
        try:
            request = urllib.request.Request(route, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                answer = json.loads(resp.read())
            latency = time.monotonic() - start
            reply = ((answer.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
            if not reply.strip():
                raise SmokeTestError(f"smoke test: {route} answered with an empty message: {json.dumps(answer)[:300]}")
            usage = answer.get("usage") or {}
            return {"ok": True, "route": route, "prompt": prompt, "reply": reply, "latency_s": round(latency, 3),
                    "prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens")}
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace")
            raise SmokeTestError(f"smoke test: {route} answered HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(min(2.0 * 2 ** attempt, 10.0))
    raise SmokeTestError(f"smoke test: {route} unreachable after {attempts} tries ({last})")
