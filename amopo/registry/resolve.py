"""``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``) → the artifact URI of the Hugging Face folder.

The deploy step hands that URI to KServe as ``storageUri``; `amopo serve` downloads it into the
cache (``$AMOPO_CACHE/registry/NAME/VERSION``) once and serves the local copy.
"""

from __future__ import annotations

import hashlib

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from amopo.registry import RegistryError
from amopo.registry import store
from amopo.registry.inputs import check_hf_folder

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))/?$")


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: int
    hf_artifact_uri: str
    tracking_uri: str


def is_models_uri(text: str) -> bool:
    return text.startswith("models:/")


def parse_models_uri(uri: str) -> tuple[str, str | None, int | None]:
    """(name, alias, version) of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``."""
    match = _MODELS_URI.match(uri)
    if not match:
        raise RegistryError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    return match["name"], match["alias"], int(match["version"]) if match["version"] else None


def resolve(uri: str, tracking_uri: str | None = None, *, attempts: int = 5,
            first_delay_s: float = 1.0, registry: str = "mlflow", model_registry_url: str = "") -> RegisteredModel:
    """The version behind ``uri`` and the artifact URI of its Hugging Face folder. With ``registry``
    kubeflow: the version in the Kubeflow Model Registry at ``model_registry_url`` (``models:/NAME/VERSION``
    names the version by its name) and its model artifact's URI; ``tracking_uri`` holds that address."""
    if registry == "kubeflow":
        from amopo.registry import kubeflow

        found = kubeflow.resolve(uri, model_registry_url, attempts=attempts, first_delay_s=first_delay_s)
        return RegisteredModel(found.name, found.version, found.hf_artifact_uri, model_registry_url)
    name, alias, version = parse_models_uri(uri)
    client, resolved = store.connect(tracking_uri, attempts=attempts, first_delay_s=first_delay_s)
    with store.registry_errors(f"resolving {uri}", resolved):
        mv = store.get_version(client, name, version=version, alias=alias)
        subpath = (mv.tags or {}).get(store.HF_SUBPATH_TAG, store.HF_SUBPATH)
        base = client.get_model_version_download_uri(name, mv.version).rstrip("/")
    return RegisteredModel(name, int(mv.version), f"{base}/{subpath}", resolved)


def hf_artifact_uri(uri: str, tracking_uri: str | None = None) -> str:
    """Artifact URI (file:, s3:, gs:, mlflow-artifacts:, ...) of the HF folder behind ``uri``."""
    return resolve(uri, tracking_uri).hf_artifact_uri


def download_hf_folder(uri: str, tracking_uri: str | None = None, cache_root: str | Path | None = None) -> Path:
    """Download the HF folder behind ``uri`` into the cache once (atomically) and return its path.

    The cache entry is keyed by the version's artifact URI, not by name and version alone: two MLflow
    stores both have an ``amopo`` version 1, and one must never be served for the other."""
    import mlflow.artifacts

    from amopo.models import cache_dir

    found = resolve(uri, tracking_uri)
    root = Path(cache_root) if cache_root else cache_dir() / "registry"
    key = hashlib.sha256(f"{found.tracking_uri}|{found.hf_artifact_uri}".encode()).hexdigest()[:16]
    target = root / found.name / f"{found.version}-{key}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{found.version}-", dir=target.parent))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=found.hf_artifact_uri, dst_path=str(tmp),
                                                         tracking_uri=found.tracking_uri))
        check_hf_folder(local)
        if target.exists():  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
            return target
        os.replace(local, target)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, RegistryError):
            raise
        raise RegistryError(f"{uri}: cannot download {found.hf_artifact_uri} ({type(exc).__name__}: {exc})") from exc
    shutil.rmtree(tmp, ignore_errors=True)
    return target
