"""Validate a manifest offline against a CustomResourceDefinition's openAPIV3Schema, strictly.

The API server prunes fields a structural schema does not list, so a misplaced field (say,
``nodeSelector`` under ``spec.trainer``) would be dropped silently rather than refused. Here every
object schema that lists ``properties`` and neither ``additionalProperties`` nor
``x-kubernetes-preserve-unknown-fields`` is closed, so such a field is an error, as with
``kubectl apply --validate=strict``. CEL rules (``x-kubernetes-validations``) are not evaluated.
Needs ``jsonschema``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from amopo.cluster.errors import ClusterError


@lru_cache(maxsize=8)
def _load_crd(path: str) -> dict:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # CRDs are megabytes; the C loader is ~10x faster
    return yaml.load(Path(path).read_text(), Loader=loader)


def find_crd(crd_dir: str | Path, api_version: str, kind: str) -> Path | None:
    """The CustomResourceDefinition file in ``crd_dir`` that serves ``kind`` in ``api_version``'s group, if any."""
    group = api_version.split("/")[0]
    for path in sorted(Path(crd_dir).glob("*.yaml")):
        crd = _load_crd(str(path))
        if (isinstance(crd, dict) and crd.get("kind") == "CustomResourceDefinition"
                and crd["spec"].get("group") == group and crd["spec"]["names"].get("kind") == kind):
            return path
    return None


def crd_schema(crd_file: str | Path, version: str | None = None) -> dict:
    """The openAPIV3Schema of ``version`` (default: the storage version) of the CRD in ``crd_file``."""
    crd = _load_crd(str(crd_file))
    versions = crd["spec"]["versions"]
    chosen = [v for v in versions if (v["name"] == version if version else v.get("storage"))]
    if not chosen:
        raise ClusterError(f"{crd_file}: no version {version or '(storage)'} among "
                           f"{[v['name'] for v in versions]}")
    return chosen[0]["schema"]["openAPIV3Schema"]


def closed(schema):
    """A copy of ``schema`` whose listed-properties objects reject unknown fields (see module docstring)."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) for k, v in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def validation_errors(manifest: dict, crd_file: str | Path, version: str | None = None) -> list[str]:
    """Every violation of the CRD's schema by ``manifest``, as "path: message"; empty when it is valid.

    ``metadata`` is checked only as the CRD declares it (an object); ``apiVersion`` and ``kind`` must
    match the CRD.
    """
    import jsonschema

    crd = _load_crd(str(crd_file))
    schema = closed(crd_schema(crd_file, version))
    errors = []
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    api_versions = {f"{group}/{v['name']}" for v in crd["spec"]["versions"]}
    if manifest.get("apiVersion") not in api_versions:
        errors.append(f"apiVersion: '{manifest.get('apiVersion')}' is not one of {sorted(api_versions)}")
    if manifest.get("kind") != kind:
        errors.append(f"kind: '{manifest.get('kind')}' is not '{kind}'")
    validator = jsonschema.Draft7Validator(schema)
    for err in sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) for p in err.absolute_path) or "(root)"
        errors.append(f"{path}: {err.message}")
    return errors
