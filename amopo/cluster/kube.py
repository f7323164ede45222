"""Kubernetes client plumbing shared by the TrainJob and InferenceService helpers."""

from __future__ import annotations

import json
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from amopo.cluster.errors import ClusterError


def load_kube_client(kubeconfig: str | None = None, context: str | None = None):
    """A ``kubernetes.client.ApiClient`` for the cluster this code runs against.

    Inside a pod (``KUBERNETES_SERVICE_HOST`` set) the pod's service account is used; otherwise the
    kubeconfig file ``kubeconfig``, else ``$KUBECONFIG``, else ``~/.kube/config`` (``context``
    picks a context). The global default configuration of the kubernetes package is left alone.
    Raises ClusterError when neither is available.
    """
    from kubernetes import client, config

    cfg = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not kubeconfig:
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException as exc:
            raise ClusterError(f"in-cluster Kubernetes configuration failed: {exc}") from None
        return client.ApiClient(cfg)
    # The kubernetes package reads $KUBECONFIG once at import; read it now, when it is current.
    config_file = kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    candidates = [p for p in config_file.split(os.pathsep) if p]
    if not any(Path(p).expanduser().is_file() for p in candidates):
        raise ClusterError("no Kubernetes configuration: not inside a pod (KUBERNETES_SERVICE_HOST unset) and no "
                           f"kubeconfig at {', '.join(candidates)}; set KUBECONFIG or run inside the cluster")
    try:
        config.load_kube_config(config_file=config_file, context=context, client_configuration=cfg,
                                persist_config=False)
    except (config.ConfigException, OSError, ValueError) as exc:
        raise ClusterError(f"kubeconfig {config_file}: {exc}") from None
    return client.ApiClient(cfg)


def api_error_text(exc: BaseException) -> str:
    """The API server's own message from an ApiException (its Status body), else str(exc), on one line."""
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    text = None
    if body:
        try:
            data = json.loads(body)
            text = data.get("message") or data.get("reason")
        except (ValueError, AttributeError):
            text = body if isinstance(body, str) else None
    text = " ".join(str(text or getattr(exc, "reason", None) or exc).split())
    return f"HTTP {status}: {text}" if status else text


def find_condition(obj: dict, kind: str) -> dict | None:
    """The status condition of type ``kind`` of a Kubernetes object (a dict), or None."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None


class Terminated(BaseException):
    """SIGTERM arrived while waiting on a cluster object (raised from the signal handler)."""


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` so cleanup code runs (main thread only;
    elsewhere Python cannot install signal handlers and this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
