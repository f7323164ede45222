"""One bearer token for every route that runs or describes the model.

With a token configured (``--api-key-env``, default AMOPO_SERVE_API_KEY), every request needs
``Authorization: Bearer <token>`` — KServe's v1 (``:predict``) and v2 (``/infer``) routes, model
metadata, the OpenAI routes and steering requests alike — except the probes the kubelet and
Prometheus call without credentials:

    GET /                              liveness (KServe)
    GET /v2/health/live, /v2/health/ready
    GET /v1/models/NAME                v1 readiness (a model's ready state, nothing else)
    GET /v2/models/NAME[/versions/V]/ready
    GET /metrics                       Prometheus

Tokens are compared in constant time (``hmac.compare_digest``). A refused request gets 401 with an
OpenAI-shaped error and ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

import hmac
import re

from amopo.serving.limits import reject

OPEN_PATHS = tuple(re.compile(p) for p in (
    r"^/$", r"^/v2/health/(live|ready)$", r"^/v1/models/[^/:]+$", r"^/v2/models/[^/]+(/versions/[^/]+)?/ready$",
    r"^/metrics/?$"))


def is_open(method: str, path: str) -> bool:
    """Whether ``method path`` is a probe that needs no token."""
    return method in ("GET", "HEAD") and any(p.match(path) for p in OPEN_PATHS)


def token_matches(header: str, token: str) -> bool:
    """``header`` is ``Bearer <token>`` (scheme case-insensitive), compared in constant time."""
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


class BearerToken:
    """ASGI middleware: 401 for any request but the open probes without the right bearer token."""

    def __init__(self, app, token: str):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or is_open(scope.get("method", ""), scope.get("path", "")):
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        if not token_matches(header, self.token):
            return await reject(send, 401, "missing or invalid bearer token (Authorization: Bearer <key>)",
                                kind="authentication_error", code="invalid_api_key",
                                headers=[(b"www-authenticate", b"Bearer")])
        return await self.app(scope, receive, send)
