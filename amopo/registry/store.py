"""The registry client and the tags this project writes on model versions.

A version carries every metric as a tag ``metric.<key>`` (the gate reads them back from there, so
it works on versions registered by any process), plus ``amopo.*`` tags for lineage and gate results.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator

from amopo.registry import RegistryError
from amopo.registry.retry import wait_until_reachable
from amopo.tracking import resolve_uri

METRIC_TAG = "metric."
HF_SUBPATH_TAG = "amopo.hf_subpath"
DIGEST_TAG = "amopo.digest"
TRAINING_RUN_TAG = "amopo.training_run_id"
BASE_MODEL_TAG = "amopo.base_model"
OBJECTIVE_TAG = "amopo.objective"
GATE_DECISION_TAG = "amopo.gate.decision"
GATE_REASONS_TAG = "amopo.gate.reasons"

# The folder inside a logged model that holds config, safetensors and tokenizer together.
HF_SUBPATH = "model"


def connect(tracking_uri: str | None = None, *, attempts: int = 5, first_delay_s: float = 1.0):
    """An ``MlflowClient`` for the tracking URI (explicit, ``$MLFLOW_TRACKING_URI`` or the embedded
    sqlite store), after waiting for a server URI to answer. Returns (client, uri)."""
    from mlflow import MlflowClient

    uri = resolve_uri(tracking_uri)
    wait_until_reachable(uri, attempts=attempts, first_delay_s=first_delay_s)
    return MlflowClient(tracking_uri=uri, registry_uri=uri), uri


@contextmanager
def registry_errors(what: str, uri: str) -> Iterator[None]:
    """Turn MLflow and HTTP failures inside the block into one-line RegistryErrors naming ``what``."""
    import requests
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, requests.RequestException, OSError) as exc:
        text = " ".join(str(getattr(exc, "message", None) or exc).split())
        raise RegistryError(f"{what} on {uri} failed ({type(exc).__name__}: {text[:300]})") from exc


def is_not_found(exc: BaseException) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def _registered_model(client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if is_not_found(exc):
            return None
        raise


def find_version_by_alias(client, name: str, alias: str):
    """The version behind ``alias``, or None when the model or the alias does not exist."""
    model = _registered_model(client, name)
    version = (model.aliases or {}).get(alias) if model is not None else None
    return client.get_model_version(name, str(version)) if version is not None else None


def get_version(client, name: str, *, version: int | str | None = None, alias: str | None = None):
    """The model version by number (when given) or alias; RegistryError naming what is missing."""
    from mlflow.exceptions import MlflowException

    if _registered_model(client, name) is None:
        raise RegistryError(f"no registered model named '{name}'")
    if version not in (None, "", 0, "0"):
        try:
            return client.get_model_version(name, str(version))
        except MlflowException as exc:
            if is_not_found(exc):
                raise RegistryError(f"registered model '{name}' has no version {version}") from None
            raise
    found = find_version_by_alias(client, name, alias)
    if found is None:
        raise RegistryError(f"registered model '{name}' has no alias '{alias}'")
    return found


def metrics_to_tags(metrics: dict[str, float]) -> dict[str, str]:
    return {METRIC_TAG + k: repr(float(v)) for k, v in metrics.items()}


def metrics_from_tags(tags: dict[str, Any] | None, prefix: str = METRIC_TAG) -> dict[str, float]:
    """The ``metric.*`` tags (or custom properties) of a version as floats, without the prefix;
    booleans, NaN and values that are no number are skipped."""
    out = {}
    for key, value in (tags or {}).items():
        if key.startswith(prefix) and not isinstance(value, bool):
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if not math.isnan(number):
                out[key[len(prefix):]] = number
    return out
