"""A values file: the settings of a cluster run in one YAML file (``amopo pipeline submit --values FILE``).

    run:                                # how the run is submitted; not pipeline parameters
      service_account: amopo-pipeline   # the ServiceAccount every pod of the run uses
      experiment: amopo                 # the KFP experiment the run goes into
    parameters:                         # pipeline parameters (pipelines/amopo_pipeline.py)
      image: registry.example.com/amopo:0.1.0
      namespace: amopo
      launcher: trainjob

Both sections are optional; nothing else may be at the top. ``parameters`` are checked as
``--param`` values are (:mod:`pipelines.params`), and ``--param`` and the submit flags override the
file. The run's namespace is not a run setting: it is the ``namespace`` parameter (see
:mod:`pipelines.submit`). k8s/values/ holds the files for the shipped overlays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from amopo.errors import ConfigError
from pipelines.params import ParamLoader, pipeline_parameters, typed_value

RUN_SETTINGS = ("service_account", "experiment")
SECTIONS = ("run", "parameters")


@dataclass
class Values:
    """What a values file holds: run settings (only those it sets) and pipeline parameters."""

    run: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, object] = field(default_factory=dict)


def load_values(path: str | Path) -> Values:
    """Read and check the values file at ``path``; ConfigError naming the file and the key otherwise."""
    path = Path(path)
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=ParamLoader)
    except OSError as exc:
        raise ConfigError(f"values file {path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"values file {path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"values file {path}: expected a mapping with {' and/or '.join(SECTIONS)}, "
                          f"got {type(doc).__name__}")
    for key in doc:
        if key not in SECTIONS:
            raise ConfigError(f"{path}: {key}: unknown section; a values file has {' and '.join(SECTIONS)} "
                              "(pipeline parameters go under parameters)")
    run, params = doc.get("run") or {}, doc.get("parameters") or {}
    for section, body in (("run", run), ("parameters", params)):
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: {section}: expected a mapping, got {type(body).__name__}")
    for key, value in run.items():
        if key not in RUN_SETTINGS:
            raise ConfigError(f"{path}: run.{key}: unknown run setting; known: {', '.join(RUN_SETTINGS)}")
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{path}: run.{key}: expected a non-empty string, got {value!r}")
    known = pipeline_parameters()
    typed = {str(k): typed_value(str(k), v, known, f"{path}: parameters.{k}") for k, v in params.items()}
    return Values(run=dict(run), parameters=typed)
