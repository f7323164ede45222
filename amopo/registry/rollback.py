"""`amopo rollback`: serve an earlier registered version again and make it the ``champion``.

    1. find version ``--version`` of the registered model (MLflow, or the Kubeflow Model Registry
       with ``--registry kubeflow``, where the number is the version's id as in `amopo promote`)
    2. its storage URI, as the deploy step serves it (:func:`amopo.registry.resolve.resolve`: the
       version's Hugging Face folder in the artifact store)
    3. point the InferenceService at it with a JSON patch guarded by a ``test`` of the runtime
       (:func:`amopo.cluster.inferenceservice.storage_uri_patch`: ``spec.predictor.model.storageUri``
       for the Hugging Face runtime, the ``STORAGE_URI`` variable for ``serving_runtime=custom``)
    4. wait until KServe reports it Ready (the deploy step's wait)
    5. only then move alias ``champion`` to the version (as `amopo promote` moves it)

A service that does not become Ready leaves the alias where it was: the error says the service was
patched but is not Ready. ``--dry-run`` reads the registry and the service and prints what it would
do (the version, its URI, the JSON patch, the alias move) without changing anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from amopo.config import field
from amopo.errors import ConfigError
from amopo.registry import RegistryError
from amopo.registry.register import check_name

POLL_S = 5.0   # between readiness checks


@dataclass
class RollbackConfig:
    version: int = field(0, help="the version to go back to (registry kubeflow: the version's id, as in promote)")
    registered_model_name: str = field("amopo", help="registered model name")
    champion_alias: str = field("champion", help="alias moved to the version once the service is Ready")
    namespace: str = field("amopo", help="namespace of the InferenceService (the pipeline's serving_namespace)")
    inference_service: str = field("", help="the InferenceService to patch (default: the registered model's "
                                            "name, as the deploy step names it)")
    timeout_minutes: float = field(30.0, help="how long to wait for the service to be Ready again")
    dry_run: bool = field(False, help="print the version, its URI, the JSON patch and the alias move; change nothing")
    mlflow_tracking_uri: str | None = field(None, help="MLflow tracking/registry URI (default: $MLFLOW_TRACKING_URI, "
                                                       "else the embedded sqlite store under runs/mlflow)")
    connect_attempts: int = field(5, help="tries to reach the registry before giving up")
    connect_backoff_s: float = field(1.0, help="first wait between tries (doubles each time, capped at 15 s)")
    registry: str = field("mlflow", help="the registry holding the versions: mlflow or kubeflow (Kubeflow Model "
                                         "Registry: the alias is the version property amopo.alias)")
    model_registry_url: str = field("", help="Kubeflow Model Registry REST address (registry kubeflow; its token: "
                                             "$AMOPO_MODEL_REGISTRY_TOKEN, else the pod's service account's)")

    def validate(self) -> None:
        from amopo.cluster.errors import ClusterError
        from amopo.cluster.pod_parts import check_name as check_k8s_name
        from amopo.registry.kubeflow import check_registry

        check_name(self.registered_model_name)
        check_registry(self.registry, self.model_registry_url)
        if self.version <= 0:
            raise ConfigError("rollback needs --version N: the registered version to go back to")
        if self.timeout_minutes <= 0:
            raise ConfigError("timeout_minutes must be > 0")
        if self.connect_attempts < 1:
            raise ConfigError("connect_attempts must be at least 1")
        if not self.namespace:
            raise ConfigError("namespace must not be empty")
        try:
            check_k8s_name(self.inference_service or self.registered_model_name, "InferenceService")
        except ClusterError as exc:   # here a wrong option
            raise ConfigError(f"inference_service: {exc}") from None


@dataclass
class _Found:
    label: str                      # how the version is named in messages
    storage_uri: str
    champion: str | None            # the version holding the champion alias now
    move_alias: Callable[[], None]


def _missing_version(exc: RegistryError, listing: list[str]) -> RegistryError:
    if "has no version" not in str(exc):
        return exc
    return RegistryError(f"{exc}; its versions: {', '.join(listing) if listing else 'none'}")


def _mlflow(cfg: RollbackConfig) -> _Found:
    from amopo.registry import store
    from amopo.registry.resolve import resolve

    name, alias = cfg.registered_model_name, cfg.champion_alias
    client, uri = store.connect(cfg.mlflow_tracking_uri, attempts=cfg.connect_attempts,
                                first_delay_s=cfg.connect_backoff_s)
    with store.registry_errors(f"rolling back '{name}'", uri):
        try:
            store.get_version(client, name, version=cfg.version)
        except RegistryError as exc:
            numbers = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
            raise _missing_version(exc, [str(n) for n in numbers]) from None
        champion = store.find_version_by_alias(client, name, alias)
        storage_uri = resolve(f"models:/{name}/{cfg.version}", uri, attempts=cfg.connect_attempts,
                              first_delay_s=cfg.connect_backoff_s).hf_artifact_uri

    def move_alias() -> None:
        with store.registry_errors(f"moving alias '{alias}' of '{name}'", uri):
            client.set_registered_model_alias(name, alias, str(cfg.version))

    return _Found(str(cfg.version), storage_uri, str(champion.version) if champion is not None else None, move_alias)


def _kubeflow(cfg: RollbackConfig) -> _Found:
    from amopo.registry import kubeflow
    from amopo.registry.resolve import resolve

    name, alias, url = cfg.registered_model_name, cfg.champion_alias, cfg.model_registry_url
    with kubeflow.registry_errors(f"rolling back '{name}'", url):
        client = kubeflow.connect(url, attempts=cfg.connect_attempts, first_delay_s=cfg.connect_backoff_s)
        try:
            mv = kubeflow.get_version(client, name, version=cfg.version)
        except RegistryError as exc:
            raise _missing_version(exc, [f"id {v.id} ('{v.name}')" for v in kubeflow.versions(client, name)]) from None
        champion = kubeflow.find_by_alias(client, name, alias)
    storage_uri = resolve(f"models:/{name}/{mv.name}", registry="kubeflow", model_registry_url=url,
                          attempts=cfg.connect_attempts, first_delay_s=cfg.connect_backoff_s).hf_artifact_uri

    def move_alias() -> None:
        with kubeflow.registry_errors(f"moving alias '{alias}' of '{name}'", url):
            # read again: the version's properties may have changed during the wait
            kubeflow.set_alias(client, name, alias, kubeflow.get_version(client, name, version=mv.id))

    return _Found(f"'{mv.name}' (id {mv.id})", storage_uri,
                  f"'{champion.name}' (id {champion.id})" if champion is not None else None, move_alias)


def rollback(cfg: RollbackConfig) -> dict:
    """Steps 1-5 of the module docstring, one printed line each. Returns what was done (or, with
    ``dry_run``, what would be)."""
    from amopo.cluster.errors import ClusterError
    from amopo.cluster.inferenceservice import (KIND, get_inferenceservice, json_patch_inferenceservice,
                                                served_storage_uri, storage_uri_patch, wait_until_ready)
    from amopo.cluster.kube import load_kube_client

    name, alias = cfg.registered_model_name, cfg.champion_alias
    service = cfg.inference_service or name
    where = f"{KIND} {cfg.namespace}/{service}"
    registry = "the Kubeflow Model Registry" if cfg.registry == "kubeflow" else "MLflow"
    found = _kubeflow(cfg) if cfg.registry == "kubeflow" else _mlflow(cfg)
    holder = f"version {found.champion}" if found.champion else "no version"
    print(f"[1/5] {name} version {found.label} found in {registry} ('{alias}' is on {holder})", flush=True)
    print(f"[2/5] its storage URI: {found.storage_uri}", flush=True)

    api_client = load_kube_client()
    current = get_inferenceservice(cfg.namespace, service, api_client=api_client)
    patch = storage_uri_patch(current, found.storage_uri)
    serving = served_storage_uri(current)
    summary = {"name": name, "version": cfg.version, "storage_uri": found.storage_uri, "namespace": cfg.namespace,
               "inference_service": service, "previous_storage_uri": serving, "patch": patch,
               "previous_champion": found.champion, "dry_run": cfg.dry_run}
    if cfg.dry_run:
        print(f"[3/5] dry run: would patch {where} (serving {serving}) with the JSON patch {json.dumps(patch)}",
              flush=True)
        print(f"[4/5] dry run: would wait up to {cfg.timeout_minutes:g} min for it to be Ready", flush=True)
        print(f"[5/5] dry run: would move alias '{alias}' from {holder} to version {found.label}; nothing changed",
              flush=True)
        return summary

    json_patch_inferenceservice(cfg.namespace, service, patch, api_client=api_client)
    print(f"[3/5] patched {where}: {found.storage_uri} (was {serving}); waiting for Ready", flush=True)
    try:
        ready = wait_until_ready(cfg.namespace, service, api_client=api_client, timeout_s=cfg.timeout_minutes * 60.0,
                                 poll_s=POLL_S, log=lambda line: print(f"[4/5] {line}", flush=True))
    except ClusterError as exc:
        detail = str(exc).removeprefix(f"{where}: ")
        raise ClusterError(f"{where} was patched to {name} version {found.label} ({found.storage_uri}) but is not "
                           f"Ready: {detail}; alias '{alias}' was not moved (still on {holder})",
                           kind=KIND, namespace=cfg.namespace, name=service, reason=exc.reason,
                           message=exc.message) from None
    try:
        found.move_alias()
    except RegistryError as exc:
        raise RegistryError(f"{where} serves {name} version {found.label} and is Ready, but the alias was not "
                            f"moved: {exc}") from None
    print(f"[5/5] alias '{alias}' moved from {holder} to version {found.label}", flush=True)
    return {**summary, "service_url": ready["url"], "champion_version": cfg.version}
