"""The two KServe quirks this package works around, kept in one place.

1. ``kserve.model_server`` parses ``sys.argv`` when imported (flags like ``--model`` would be read as
   its ``--model_name``), so kserve is imported here with a bare ``sys.argv``.
2. KServe's REST server binds 0.0.0.0 with no option. ``ModelServer.start`` builds the uvicorn
   config and only then runs ``_serve``; ``BoundModelServer._serve`` sets the host on that config
   just before uvicorn binds.
"""

from __future__ import annotations

import sys

_argv, sys.argv = sys.argv, sys.argv[:1]
try:
    import kserve
    from kserve import Model, ModelServer
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
finally:
    sys.argv = _argv

__all__ = ["BoundModelServer", "InferOutput", "InferRequest", "InferResponse", "InvalidInput", "Model",
           "ModelServer", "kserve"]


class BoundModelServer(ModelServer):
    """A kserve ModelServer whose REST server listens on ``host`` (KServe itself uses 0.0.0.0)."""

    def __init__(self, *, host: str, **kwargs):
        super().__init__(**kwargs)
        self.host = host

    async def _serve(self):
        rest = getattr(self, "_rest_server", None)
        if rest is None or not hasattr(rest, "config"):
            raise RuntimeError("kserve's REST server has no uvicorn config to bind; kserve's internals changed")
        rest.config.host = self.host
        await super()._serve()
