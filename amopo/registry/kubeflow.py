"""The Kubeflow Model Registry backend of `amopo register`, `amopo promote` and deploy (``registry: kubeflow``).

Kubeflow's Model Registry keeps metadata only: which model, which version, where its files are and
which pipeline run made it; KServe deploys from it. This module talks to it through the
``model-registry`` client (``ModelRegistry``), over its REST API (v1alpha3). What goes where:

    registered model        ``name`` (owner: the author)
    model version           name: ``model_version``, else the pipeline run id, else the next number
                            ("1", "2", …); its id is what ``version`` means in summaries and in
                            `amopo promote --version`
    model artifact          ``uri``: the Hugging Face folder in the store the InferenceService reads
                            (``storage_uri``; the pipeline passes the model artifact's own URI),
                            model format ``huggingface`` and the transformers version of config.json;
                            the pipeline run is its source: model_source_kind ``pipelines``,
                            model_source_class ``pipelinerun``, model_source_group the namespace,
                            model_source_id the run id
    version metadata        custom properties: ``metric.<key>`` (a double per metric: training summary
    (customProperties)      and eval metrics), ``amopo.digest``, ``amopo.*`` lineage (training run, base
                            model, objective, train_dir), ``amopo.comparison.*`` (the comparison's
                            verdict) and, after `amopo promote`, ``amopo.gate.*`` (decision and reasons)
    aliases                 the custom property ``amopo.alias`` of a version: its aliases,
                            comma-separated (``challenger``, ``champion``; ``none`` when it has lost
                            them all). An alias is on at most one version of a model: moving it to a
                            version takes it off the version that had it (that version's
                            ``amopo.alias`` is rewritten, so the property always says where a
                            version stands). Custom properties rather than labels (string
                            properties with an empty value, as the UI shows them): a label has no
                            value to hold two aliases, and ``amopo.alias`` is searchable by key

Registering again is safe. When the version's name already exists, its ``amopo.digest`` (sha256 of
the model folder and the metrics, :func:`amopo.registry.inputs.digest`) decides: the same digest
reuses the version (a version left without its model artifact by an interrupted registration gets
it now), a different one is refused with a RegistryError naming both digests. Without a version name
a version with the same digest is reused whatever its name. The Model Registry cannot delete, so a
failed registration is completed by the rerun rather than rolled back.

The server's address is ``model_registry_url`` (``http://`` or ``https://`` with the port); its token
comes from ``$AMOPO_MODEL_REGISTRY_TOKEN`` and otherwise, as the client does on its own, from the
pod's service-account token. A token is never a parameter.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

from amopo.errors import ConfigError
from amopo.registry import RegistryError
from amopo.registry.retry import with_backoff

REGISTRIES = ("mlflow", "kubeflow")
TOKEN_ENV = "AMOPO_MODEL_REGISTRY_TOKEN"
ALIAS_PROPERTY = "amopo.alias"
NO_ALIAS = "none"
DIGEST_PROPERTY = "amopo.digest"
METRIC_PROPERTY = "metric."
GATE_DECISION_PROPERTY = "amopo.gate.decision"
GATE_REASONS_PROPERTY = "amopo.gate.reasons"
MODEL_FORMAT = "huggingface"
SOURCE_KIND = "pipelines"
SOURCE_CLASS = "pipelinerun"

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>[^/@]+))/?$")


def check_registry(registry: str, model_registry_url: str | None) -> None:
    """ConfigError unless ``registry`` is mlflow or kubeflow (the latter with an http(s) URL)."""
    if registry not in REGISTRIES:
        raise ConfigError(f"registry {registry!r}: expected one of {', '.join(REGISTRIES)}")
    if registry == "kubeflow":
        if not model_registry_url:
            raise ConfigError("registry kubeflow needs model_registry_url (e.g. "
                              "http://model-registry-service.kubeflow.svc.cluster.local:8080)")
        if urlparse(model_registry_url).scheme not in ("http", "https"):
            raise ConfigError(f"model_registry_url {model_registry_url!r}: expected http://HOST:PORT or https://HOST")


def _run(coro):
    """The client's async runner: each call in a fresh event loop (in a thread when one is running),
    instead of the client's default, which patches asyncio process-wide (nest_asyncio2)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="model-registry-call")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _client_errors() -> tuple[type[BaseException], ...]:
    import aiohttp
    from model_registry.exceptions import StoreError
    from mr_openapi.exceptions import OpenApiException

    return StoreError, OpenApiException, aiohttp.ClientError, OSError, asyncio.TimeoutError


@contextmanager
def registry_errors(what: str, url: str) -> Iterator[None]:
    """Client and HTTP failures inside the block as one-line RegistryErrors naming ``what``."""
    try:
        yield
    except _client_errors() as exc:
        text = " ".join(str(exc).split())
        raise RegistryError(f"{what} on the Kubeflow Model Registry {url} failed "
                            f"({type(exc).__name__}: {text[:300]})") from exc


def connect(url: str, *, author: str = "amopo", attempts: int = 5, first_delay_s: float = 1.0):
    """A ``model_registry.ModelRegistry`` for ``url`` once the server answers (the client lists one
    registered model on construction); retried with back-off."""
    import logging

    from model_registry import ModelRegistry

    parsed = urlparse(url)
    secure = parsed.scheme == "https"
    token = os.environ.get(TOKEN_ENV) or None
    address = f"{parsed.scheme}://{parsed.hostname}"
    port = parsed.port or (443 if secure else 80)

    def make():
        return ModelRegistry(address, port, author=author, is_secure=secure, user_token=token,
                             log_level=logging.ERROR, async_runner=_run)

    import aiohttp
    from mr_openapi.exceptions import ServiceException

    return with_backoff(make, what=f"cannot reach the Kubeflow Model Registry at {url}", attempts=attempts,
                        first_delay_s=first_delay_s,
                        retry_on=(aiohttp.ClientConnectionError, asyncio.TimeoutError, ServiceException))


# --- aliases and metadata -------------------------------------------------------------------------

def aliases_of(version) -> list[str]:
    text = str((version.custom_properties or {}).get(ALIAS_PROPERTY) or "")
    return [a for a in (s.strip() for s in text.split(",")) if a and a != NO_ALIAS]


def _set_aliases(client, version, aliases: list[str]) -> None:
    props = dict(version.custom_properties or {})
    props[ALIAS_PROPERTY] = ",".join(aliases) if aliases else NO_ALIAS
    version.custom_properties = props
    client.update(version)


def versions(client, name: str) -> list:
    """Every version of ``name`` (oldest first)."""
    return sorted(client.get_model_versions(name), key=lambda v: int(v.id))


def find_by_alias(client, name: str, alias: str):
    """The version of ``name`` holding ``alias`` (the newest if several do), or None."""
    if client.get_registered_model(name) is None:
        return None
    holders = [v for v in versions(client, name) if alias in aliases_of(v)]
    return holders[-1] if holders else None


def set_alias(client, name: str, alias: str, version) -> None:
    """Give ``alias`` to ``version``, taking it off any other version of ``name`` first."""
    for other in versions(client, name):
        if other.id != version.id and alias in aliases_of(other):
            _set_aliases(client, other, [a for a in aliases_of(other) if a != alias])
    if alias not in aliases_of(version):
        _set_aliases(client, version, aliases_of(version) + [alias])


def metrics_to_properties(metrics: dict[str, float]) -> dict[str, float]:
    return {METRIC_PROPERTY + k: float(v) for k, v in metrics.items()}


def metrics_from_properties(props: dict[str, Any] | None) -> dict[str, float]:
    """The ``metric.*`` custom properties of a version as floats (what the gate compares)."""
    from amopo.registry.store import metrics_from_tags

    return metrics_from_tags(props, METRIC_PROPERTY)


def get_version(client, name: str, *, version: int | str | None = None, alias: str | None = None):
    """The version of ``name`` by id (when given) or alias; RegistryError naming what is missing."""
    if client.get_registered_model(name) is None:
        raise RegistryError(f"no registered model named '{name}' in the Kubeflow Model Registry")
    if version not in (None, "", 0, "0"):
        found = [v for v in versions(client, name) if v.id == str(version)]
        if not found:
            raise RegistryError(f"registered model '{name}' has no version with id {version}")
        return found[0]
    found = find_by_alias(client, name, alias) if alias else None
    if found is None:
        raise RegistryError(f"registered model '{name}' has no version with alias '{alias}'")
    return found


# --- register -------------------------------------------------------------------------------------

def _format_version(model_dir: Path) -> str:
    try:
        return str(json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("transformers_version")
                   or "1")
    except (OSError, ValueError, AttributeError):
        return "1"


def _next_version_name(existing: list) -> str:
    numbers = [int(v.name) for v in existing if v.name.isdigit()]
    return str(max(numbers, default=0) + 1)


def _summary(cfg, name: str, mv, artifact_uri: str, *, reused: bool, alias: str) -> dict:
    return {"name": name, "version": int(mv.id), "version_name": mv.name, "alias": alias, "reused": reused,
            "model_uri": f"models:/{name}/{mv.name}", "alias_uri": f"models:/{name}@{alias}" if alias else None,
            "hf_artifact_uri": artifact_uri, "registration_run_id": None, "registry": "kubeflow",
            "model_registry_url": cfg.model_registry_url, "pipeline_run_id": cfg.pipeline_run_id or None}


def register(cfg, trained, metrics: dict[str, float], fingerprint: str, properties: dict[str, str],
             comparison_properties: dict[str, str]) -> dict:
    """Register ``trained`` (see the module docstring); ``properties`` are the string lineage tags
    the MLflow backend writes too, ``comparison_properties`` the ``amopo.comparison.*`` ones."""
    from model_registry.types import ModelArtifact

    url = cfg.model_registry_url
    uri = cfg.storage_uri or trained.model_dir.resolve().as_uri()
    source = {"model_source_kind": SOURCE_KIND, "model_source_class": SOURCE_CLASS,
              "model_source_group": cfg.pipeline_namespace or None, "model_source_id": cfg.pipeline_run_id or None}
    artifact_fields = {"model_format_name": MODEL_FORMAT, "model_format_version": _format_version(trained.model_dir),
                       **(source if cfg.pipeline_run_id else {})}
    with registry_errors(f"registering '{cfg.registered_model_name}'", url):
        client = connect(url, author=cfg.model_registry_author, attempts=cfg.connect_attempts,
                         first_delay_s=cfg.connect_backoff_s)
        model = client.get_registered_model(cfg.registered_model_name)
        existing = versions(client, cfg.registered_model_name) if model is not None else []
        wanted = cfg.model_version or cfg.pipeline_run_id
        if wanted:
            same = next((v for v in existing if v.name == wanted), None)
            if same is not None:
                held = (same.custom_properties or {}).get(DIGEST_PROPERTY)
                if held != fingerprint:
                    raise RegistryError(
                        f"'{cfg.registered_model_name}' version '{wanted}' is already registered with digest {held or '(none)'}, "
                        f"but {cfg.train_dir} and its metrics have digest {fingerprint}: a different model or "
                        f"different metrics under the same version name; register it under another version "
                        f"name (model_version) or another pipeline run")
        else:
            same = next((v for v in reversed(existing)
                         if (v.custom_properties or {}).get(DIGEST_PROPERTY) == fingerprint), None)
            wanted = same.name if same is not None else _next_version_name(existing)

        if same is not None:
            artifact = client.get_model_artifact(cfg.registered_model_name, same.name)
            if artifact is None:  # an interrupted registration: give the version its files now
                client.async_runner(client._api.upsert_model_version_artifact(
                    ModelArtifact(name=cfg.registered_model_name, uri=uri, **artifact_fields), same.id))
                artifact_uri = uri
            else:
                artifact_uri = artifact.uri
            if comparison_properties:
                same.custom_properties = {**(same.custom_properties or {}), **comparison_properties}
                same = client.update(same)
            if cfg.alias:
                set_alias(client, cfg.registered_model_name, cfg.alias, same)
            print(f"{cfg.registered_model_name} version {same.name} (id {same.id}) already holds this model and these metrics "
                  f"(digest {fingerprint})" + (f"; alias '{cfg.alias}' points to it" if cfg.alias else ""),
                  flush=True)
            return _summary(cfg, cfg.registered_model_name, same, artifact_uri, reused=True, alias=cfg.alias)

        metadata: dict[str, Any] = {**properties, **comparison_properties, **metrics_to_properties(metrics),
                                    DIGEST_PROPERTY: fingerprint, ALIAS_PROPERTY: NO_ALIAS}
        if cfg.pipeline_run_id:
            metadata["amopo.pipeline_run_id"] = cfg.pipeline_run_id
        client.register_model(cfg.registered_model_name, uri, version=wanted, author=cfg.model_registry_author,
                              owner=cfg.model_registry_author,
                              version_description=f"amopo {trained.objective or 'model'} from {cfg.train_dir}",
                              metadata=metadata, **artifact_fields)
        mv = client.get_model_version(cfg.registered_model_name, wanted)
        if cfg.alias:
            set_alias(client, cfg.registered_model_name, cfg.alias, mv)
    print(f"registered {cfg.registered_model_name} version {wanted} (id {mv.id}) in the Kubeflow Model Registry"
          + (f" (alias '{cfg.alias}')" if cfg.alias else "") + f" from {cfg.train_dir}", flush=True)
    return _summary(cfg, cfg.registered_model_name, mv, uri, reused=False, alias=cfg.alias)


# --- promote --------------------------------------------------------------------------------------

def promote(cfg) -> dict:
    """The gate of :mod:`amopo.registry.promote` on versions of the Kubeflow Model Registry: metrics
    from the versions' ``metric.*`` properties, ``champion`` moved as the property ``amopo.alias``."""
    from amopo.registry.gate import decide, parse_threshold

    url = cfg.model_registry_url
    with registry_errors(f"promoting '{cfg.registered_model_name}'", url):
        client = connect(url, attempts=cfg.connect_attempts, first_delay_s=cfg.connect_backoff_s)
        candidate = get_version(client, cfg.registered_model_name, version=cfg.version or None, alias=cfg.candidate_alias)
        champion = find_by_alias(client, cfg.registered_model_name, cfg.champion_alias)
        if champion is not None and champion.id == candidate.id:
            reasons = [f"version {candidate.name} is already '{cfg.champion_alias}'"]
            print(f"{cfg.registered_model_name} version {candidate.name}: already {cfg.champion_alias}", flush=True)
            return _promote_summary(cfg, candidate, False, reasons, champion)
        decision = decide(metrics_from_properties(candidate.custom_properties),
                          metrics_from_properties(champion.custom_properties) if champion is not None else None,
                          metric=cfg.gate_metric, min_improvement=cfg.gate_min_improvement,
                          thresholds=[parse_threshold(t) for t in cfg.gate_thresholds],
                          higher_is_better=cfg.gate_higher_is_better)
        # As with MLflow: the alias first, then the recorded reasons.
        if decision.promote:
            set_alias(client, cfg.registered_model_name, cfg.champion_alias, candidate)
            candidate = get_version(client, cfg.registered_model_name, version=candidate.id)
        candidate.custom_properties = {
            **(candidate.custom_properties or {}),
            GATE_DECISION_PROPERTY: "promoted" if decision.promote else "rejected",
            GATE_REASONS_PROPERTY: "; ".join(decision.reasons)[:4900],
            "amopo.gate.metric": cfg.gate_metric, "amopo.gate.min_improvement": repr(cfg.gate_min_improvement),
            "amopo.gate.thresholds": ", ".join(cfg.gate_thresholds),
            "amopo.gate.compared_with": champion.name if champion is not None else "none"}
        client.update(candidate)
    new_champion = candidate if decision.promote else champion
    verdict = "promoted to" if decision.promote else "not promoted to"
    print(f"{cfg.registered_model_name} version {candidate.name} {verdict} '{cfg.champion_alias}': {'; '.join(decision.reasons)}",
          flush=True)
    return _promote_summary(cfg, candidate, decision.promote, decision.reasons, new_champion)


def _promote_summary(cfg, candidate, promoted: bool, reasons: list[str], champion) -> dict:
    return {"name": cfg.registered_model_name, "version": int(candidate.id), "version_name": candidate.name, "promoted": promoted,
            "reasons": reasons, "champion_version": int(champion.id) if champion is not None else None,
            "champion_uri": f"models:/{cfg.registered_model_name}@{cfg.champion_alias}" if champion is not None else None,
            "tracking_uri": None, "registry": "kubeflow", "model_registry_url": cfg.model_registry_url}


# --- resolve --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResolvedVersion:
    name: str
    version: int            # the version's id
    version_name: str
    hf_artifact_uri: str    # the model artifact's URI: the Hugging Face folder
    model_registry_url: str


def parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version name) of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION_NAME``."""
    match = _MODELS_URI.match(uri)
    if not match:
        raise RegistryError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return match["name"], match["alias"], match["version"]


def resolve(uri: str, model_registry_url: str, *, attempts: int = 5, first_delay_s: float = 1.0) -> ResolvedVersion:
    """The version behind ``uri`` in the Kubeflow Model Registry and the URI of its model artifact."""
    name, alias, version_name = parse_models_uri(uri)
    with registry_errors(f"resolving {uri}", model_registry_url):
        client = connect(model_registry_url, attempts=attempts, first_delay_s=first_delay_s)
        if client.get_registered_model(name) is None:
            raise RegistryError(f"no registered model named '{name}' in the Kubeflow Model Registry")
        if alias:
            mv = get_version(client, name, alias=alias)
        else:
            mv = client.get_model_version(name, version_name)
            if mv is None:
                raise RegistryError(f"registered model '{name}' has no version '{version_name}'")
        artifact = client.get_model_artifact(name, mv.name)
    if artifact is None or not artifact.uri:
        raise RegistryError(f"{uri}: version '{mv.name}' of '{name}' has no model artifact (an interrupted "
                            f"registration: register it again)")
    return ResolvedVersion(name, int(mv.id), mv.name, artifact.uri, model_registry_url)


def storage_uri_for(artifact_uri: str, artifact_path: str, subfolder: str = "model") -> str:
    """The URI of ``subfolder`` of a Kubeflow Pipelines artifact as an InferenceService reads it:
    ``minio://BUCKET/KEY`` (KFP's MinIO store) as ``s3://BUCKET/KEY/model``, ``s3://`` and ``gs://``
    as they are; a local artifact (KFP's local runner) as the ``file://`` URI of its folder."""
    uri = (artifact_uri or "").rstrip("/")
    if uri.startswith("minio://"):
        uri = "s3://" + uri[len("minio://"):]
    if "://" in uri and not uri.startswith("file://"):
        return f"{uri}/{subfolder}"
    return (Path(artifact_path) / subfolder).resolve().as_uri()


def local_path(uri: str) -> str:
    """A ``file://`` URI as a local path; any other URI as it is."""
    if uri.startswith("file://"):
        from urllib.parse import unquote

        return unquote(urlparse(uri).path)
    return uri
