"""Request limits: prompt length, completion length and body size.

``BodySizeLimit`` is an ASGI middleware for every route (KServe's v1/v2 and the OpenAI ones): a
declared Content-Length above the limit is answered 413 before the body is read; a body sent
without Content-Length (chunked) is read up to the limit and answered 413 beyond it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from amopo.serving.errors import RequestError


@dataclass(frozen=True)
class Limits:
    max_prompt_tokens: int = 1024
    max_tokens: int = 512            # the largest max_tokens a request may ask for
    default_max_tokens: int = 128    # used when a request does not say
    context_length: int | None = None   # the model's maximum positions, when it declares one

    def completion_budget(self, requested: int | None, prompt_tokens: int, param: str = "max_tokens", *,
                          allow_zero: bool = False) -> int:
        """The number of new tokens for a request; RequestError when it is out of bounds. 0 (score
        the prompt only) is allowed with ``allow_zero`` (a completion with ``echo``)."""
        if requested is None:
            budget = min(self.default_max_tokens, self.max_tokens)
        else:
            if requested < (0 if allow_zero else 1):
                least = "0" if allow_zero else "1"
                hint = "" if allow_zero else " (0, to score the prompt only, needs echo=true on /completions)"
                raise RequestError(f"{param} must be at least {least}, got {requested}{hint}", param=param)
            if requested > self.max_tokens:
                raise RequestError(f"{param}={requested} is above this server's limit of {self.max_tokens}",
                                   param=param, code="max_tokens_exceeded")
            budget = requested
        if self.context_length and prompt_tokens + budget > self.context_length:
            if requested is not None:
                raise RequestError(f"the prompt ({prompt_tokens} tokens) plus {param}={requested} exceeds the "
                                   f"model's context of {self.context_length} tokens", param=param,
                                   code="context_length_exceeded")
            budget = max(1, self.context_length - prompt_tokens)
        return budget

    def check_prompt(self, prompt_tokens: int, param: str) -> None:
        if prompt_tokens == 0:
            raise RequestError(f"{param} is empty", param=param)
        if prompt_tokens > self.max_prompt_tokens:
            raise RequestError(f"the prompt is {prompt_tokens} tokens, above this server's limit of "
                               f"{self.max_prompt_tokens}", param=param, code="context_length_exceeded")


class BodySizeLimit:
    """ASGI middleware answering 413 to request bodies larger than ``max_bytes``."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                return await reject(send, 400, "invalid Content-Length header")
            if too_big:
                return await reject(send, 413, f"request body of {int(declared)} bytes is above the "
                                                f"limit of {self.max_bytes} bytes")
            return await self.app(scope, receive, send)
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        # No Content-Length: read the body here, within the limit, then replay it to the app.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await reject(send, 413, f"request body is above the limit of {self.max_bytes} bytes")
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


async def reject(send, status: int, message: str, *, kind: str | None = None, code: str | None = None,
                 headers: list[tuple[bytes, bytes]] = ()) -> None:
    """Answer an ASGI request with an OpenAI-shaped JSON error and close the connection."""
    kind = kind or ("request_too_large" if status == 413 else "invalid_request_error")
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})
