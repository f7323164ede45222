"""Submitting a run to a Kubeflow Pipelines API server: where it runs, as whom, and how the client
authenticates.

The run's namespace is the ``namespace`` parameter. Every pod of a run lives in the run's
namespace, and the train step mounts the workspace PVC (``workspace_pvc``), which lies in
``namespace`` beside the TrainJobs that share it; a pod can mount only a PVC of its own namespace. So
the run is submitted to ``namespace`` (as the Kubeflow profile namespace of a multi-user install),
and a ``--namespace`` that names another one is refused before anything is sent
(:func:`run_namespace`). A single-user (standalone) KFP runs every pipeline in its own namespace,
usually ``kubeflow``, whatever the client asks: there, set ``namespace`` to that namespace and apply
k8s/base into it. InferenceServices go to ``serving_namespace``: the pipeline's ServiceAccount needs
the Role of k8s/base there too.

The run's ServiceAccount (``service_account``, e.g. ``amopo-pipeline`` from k8s/base/rbac.yaml) is
the identity of every pod of the run; None leaves KFP's default (``pipeline-runner`` or a
profile's ``default-editor``).

Authentication, as ``kfp.Client`` documents it (:class:`Auth`): a bearer token read from an
environment variable (``existing_token``), or from a file re-read on every request
(``kfp.client.ServiceAccountTokenVolumeCredentials``: a projected ServiceAccount token, or the output
of ``kubectl create token``), or Google IAP OAuth client ids (``client_id``, ``other_client_id``,
``other_client_secret``); a session cookie (``cookies``: e.g. ``oauth2_proxy_kubeflow=...`` behind
oauth2-proxy, ``authservice_session=...`` behind the older Dex authservice) from an environment
variable; and a CA bundle for the server's TLS certificate (``ssl_ca_cert``). Secrets are never
command-line literals: the flags name the variable or file that holds them.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from amopo.errors import ConfigError


@dataclass
class Auth:
    """How the client proves who it is; at most one of ``token_env``, ``token_file`` and ``iap_client_id``."""

    token_env: str | None = None
    token_file: str | None = None
    cookies_env: str | None = None
    iap_client_id: str | None = None
    iap_other_client_id: str | None = None
    iap_other_client_secret_env: str | None = None
    ca_cert: str | None = None


def _from_env(name: str, flag: str) -> str:
    value = os.environ.get(name, "")
    if not value.strip():
        raise ConfigError(f"{flag} {name}: the environment variable is not set or empty")
    return value.strip()


def client_arguments(auth: Auth) -> dict:
    """``kfp.Client`` keyword arguments for ``auth``: secrets read from their variables and files
    checked now, so that a missing one is one clear error before anything is contacted."""
    chosen = [flag for flag, value in (("--token-env", auth.token_env), ("--token-file", auth.token_file),
                                       ("--iap-client-id", auth.iap_client_id)) if value]
    if len(chosen) > 1:
        raise ConfigError(f"{' and '.join(chosen)}: choose one way to authenticate")
    if (auth.iap_other_client_id or auth.iap_other_client_secret_env) and not auth.iap_client_id:
        raise ConfigError("--iap-other-client-id/--iap-other-client-secret-env need --iap-client-id")
    out: dict = {}
    if auth.token_env:
        out["existing_token"] = _from_env(auth.token_env, "--token-env")
    if auth.token_file:
        from kfp.client import ServiceAccountTokenVolumeCredentials

        path = Path(auth.token_file)
        if not path.is_file() or not path.read_text(encoding="utf-8").strip():
            raise ConfigError(f"--token-file {path}: no token there (missing or empty file)")
        out["credentials"] = ServiceAccountTokenVolumeCredentials(str(path))
    if auth.iap_client_id:
        out["client_id"] = auth.iap_client_id
        if auth.iap_other_client_id:
            out["other_client_id"] = auth.iap_other_client_id
        if auth.iap_other_client_secret_env:
            out["other_client_secret"] = _from_env(auth.iap_other_client_secret_env, "--iap-other-client-secret-env")
    if auth.cookies_env:
        out["cookies"] = _from_env(auth.cookies_env, "--cookies-env")
    if auth.ca_cert:
        if not Path(auth.ca_cert).is_file():
            raise ConfigError(f"--ca-cert {auth.ca_cert}: no such file")
        out["ssl_ca_cert"] = str(auth.ca_cert)
    return out


def run_namespace(params: dict, requested: str | None = None) -> str:
    """The namespace the run executes in: the ``namespace`` parameter of ``params`` (all parameters,
    defaults included). ``requested`` (``--namespace``) must name the same one; ConfigError naming
    both otherwise (see the module docstring for why)."""
    namespace, pvc = str(params["namespace"]), str(params["workspace_pvc"])
    if requested and requested != namespace:
        raise ConfigError(
            f"run namespace '{requested}' is not the namespace parameter '{namespace}': the train step mounts the "
            f"workspace PVC '{pvc}', which lies in '{namespace}' beside the TrainJobs, and a pod can mount only a PVC "
            f"of its own namespace. Submit to '{namespace}', or set --param namespace={requested} and apply "
            f"k8s/base (PVC, ServiceAccounts, Role) in '{requested}'")
    return namespace


def root_cause(exc: BaseException) -> BaseException:
    """The innermost error behind ``exc`` (urllib3 wraps the TLS or connection failure that says why)."""
    seen = {id(exc)}
    while True:
        reason = getattr(exc, "reason", None)
        inner = reason if isinstance(reason, BaseException) else (exc.__cause__ or exc.__context__)
        if inner is None or id(inner) in seen:
            return exc
        seen.add(id(inner))
        exc = inner


def submit(host: str, *, params: dict, experiment: str, run_name: str | None, namespace: str,
           service_account: str | None = None, auth: Auth | None = None, package: str | Path | None = None) -> dict:
    """Create a run of the compiled pipeline on the KFP API server at ``host`` in ``namespace``
    (see :func:`run_namespace`) as ``service_account``; ``package`` default: compile now, with
    ``params["image"]`` as the image's default when given."""
    import kfp

    from pipelines.package import compile_pipeline

    kwargs = client_arguments(auth or Auth())
    with tempfile.TemporaryDirectory(prefix="amopo-submit-") as tmp:
        package = Path(package) if package else compile_pipeline(Path(tmp) / "amopo_pipeline.yaml",
                                                                 image=params.get("image"))
        try:
            client = kfp.Client(host=host, namespace=namespace, **kwargs)
            result = client.create_run_from_pipeline_package(
                str(package), arguments=params, run_name=run_name, experiment_name=experiment, namespace=namespace,
                service_account=service_account, enable_caching=False)
        except Exception as exc:  # the client raises urllib3/kfp_server_api/ValueError types alike
            cause = root_cause(exc)
            raise ConfigError(f"submitting to {host} failed: {type(cause).__name__}: "
                              f"{' '.join(str(cause).split())[:300]}") from None
    url = f"{host.rstrip('/')}/#/runs/details/{result.run_id}"
    return {"run_id": result.run_id, "run_url": url, "experiment": experiment, "namespace": namespace,
            "service_account": service_account}
