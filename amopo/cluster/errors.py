"""The error every cluster helper raises: one line naming the object, where it is and what went wrong."""

from __future__ import annotations

from amopo.errors import AmopoError


class ClusterError(AmopoError):
    """A Kubernetes object could not be built, created, or did not reach its goal.

    ``kind``/``namespace``/``name`` say which object; ``reason`` and ``message`` carry what its
    controller reported (a status condition), when there was one.
    """

    def __init__(self, text: str, *, kind: str | None = None, namespace: str | None = None,
                 name: str | None = None, reason: str | None = None, message: str | None = None):
        super().__init__(text)
        self.kind, self.namespace, self.name = kind, namespace, name
        self.reason, self.message = reason, message
