"""An OpenAI-compatible chat endpoint (a hosted model, vLLM, KServe, ``amopo serve``).

The URL may be the server root (``http://host:8080`` → ``/v1`` is added), an API base
(``…/v1``, ``…/openai/v1``), or the full ``…/chat/completions`` route. The API key is read from the
environment variable the caller names, never from the command line. Connection errors, timeouts,
HTTP 408/409/429 and 5xx are retried by the ``openai`` client with exponential back-off (0.5 s
doubling up to 8 s, with jitter); when the retries are spent, ``EndpointError`` says which URL
failed and how.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from amopo.errors import AmopoError, ConfigError


class EndpointError(AmopoError):
    """An endpoint cannot be reached or answers with an error."""


def is_endpoint(spec: str | None) -> bool:
    return bool(spec) and spec.startswith(("http://", "https://"))


def api_base(url: str) -> str:
    """The API base the ``openai`` client expects (ends in ``/v1`` or the server's own prefix)."""
    url = url.rstrip("/")
    for suffix in ("/chat/completions", "/completions"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
    return url + "/v1" if urlsplit(url).path in ("", "/") else url


def api_key_from_env(variable: str | None) -> str | None:
    """The key in ``$variable``; a named but unset variable is an error."""
    if not variable:
        return None
    key = os.environ.get(variable)
    if not key:
        raise ConfigError(f"environment variable {variable} (the endpoint's API key) is not set")
    return key


class ChatEndpoint:
    """Chat completions on one served model; ``model=None`` takes the first one the server lists."""

    def __init__(self, url: str, model: str | None = None, *, api_key_env: str | None = None,
                 retries: int = 3, timeout: float = 120.0):
        from openai import OpenAI

        self.url = url
        self.base = api_base(url)
        self.api_key = api_key_from_env(api_key_env)
        self.retries = retries
        # The client refuses to start without a key; servers without auth ignore this one.
        self._client = OpenAI(base_url=self.base, api_key=self.api_key or "no-key", max_retries=retries,
                              timeout=timeout)
        self.model = model or self._first_model()

    def _call(self, what: str, fn):
        import openai

        try:
            return fn()
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise EndpointError(f"{self.base}: {what} failed: endpoint unreachable after {self.retries} "
                                f"retries with back-off ({exc})") from None
        except openai.APIStatusError as exc:
            body = (exc.response.text or "")[:300] if exc.response is not None else ""
            raise EndpointError(f"{self.base}: {what} failed with HTTP {exc.status_code} "
                                f"(after up to {self.retries} retries): {body}") from None

    def _first_model(self) -> str:
        listed = self._call("listing models (GET /models)", lambda: self._client.models.list())
        ids = [m.id for m in listed.data]
        if not ids:
            raise EndpointError(f"{self.base}: the server lists no models; pass the model name explicitly")
        return ids[0]

    def chat(self, messages: list[dict], *, max_tokens: int, temperature: float = 0.0,
             seed: int | None = None) -> str:
        """The reply text ("" when the server returns no content)."""
        kwargs = {"seed": seed} if seed is not None else {}
        response = self._call(
            f"chat completion with model '{self.model}'",
            lambda: self._client.chat.completions.create(model=self.model, messages=messages,
                                                         max_tokens=max_tokens, temperature=temperature,
                                                         **kwargs))
        if not response.choices:
            return ""
        return response.choices[0].message.content or ""
