"""Serving errors: one for the operator (the server cannot start), one for a client (bad request)."""

from __future__ import annotations

from amopo.errors import AmopoError


class ServingError(AmopoError):
    """The server cannot start: the model cannot be found or loaded, or a setting is wrong."""


class RequestError(Exception):
    """A client's request is wrong; it is answered with ``status`` and ``message`` and the server stays up.

    ``type``, ``param`` and ``code`` follow the OpenAI error object (``openai.types.shared.ErrorObject``).
    """

    def __init__(self, message: str, *, status: int = 400, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.status, self.param, self.code, self.type = message, status, param, code, type
