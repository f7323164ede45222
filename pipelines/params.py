"""Pipeline parameters: their names and defaults, and typed values for them from ``--param KEY=VALUE``
or from a values file (:mod:`pipelines.values`), checked the same way.

A value must have its parameter's type (the type of its default). Two conversions, the same from the
command line and from a file: an integer where a float is expected is that float, and a string
parameter takes a command-line value as its text and a file's number as its text (``eval_cpu: 4``).

Parameters that size a step's pod are strings, because KFP reads a pod's resources only from string
parameters: ``*_cpu`` and ``*_memory`` must be Kubernetes quantities (``500m``, ``4``, ``16Gi``) and
a string ``*_gpus`` an integer >= 1, or empty for no GPU (:func:`check_pod_resources`).
"""

from __future__ import annotations

import inspect
import re

import yaml

from amopo.errors import ConfigError


class ParamLoader(yaml.SafeLoader):
    """YAML 1.1 as ``safe_load`` reads it, except that exponents without a dot (``3e-4``) are floats,
    as in YAML 1.2, at any depth (``train_options={lr: 3e-4}`` too)."""


ParamLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                  re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                  list("-+0123456789"))

# The resource.Quantity pattern of Kubernetes' OpenAPI schemas.
_QUANTITY = re.compile(r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
                       r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")


def pipeline_parameters() -> dict[str, object]:
    """Name → default of every pipeline parameter."""
    from pipelines.amopo_pipeline import amopo_pipeline

    signature = inspect.signature(amopo_pipeline.pipeline_func)
    return {name: p.default for name, p in signature.parameters.items()}


def typed_value(key: str, value: object, known: dict[str, object], where: str) -> object:
    """``value`` for parameter ``key``, converted as the module docstring says; ConfigError naming
    ``where`` (e.g. ``--param max_steps`` or ``values.yaml: parameters.max_steps``) otherwise."""
    if key not in known:
        raise ConfigError(f"{where}: not a pipeline parameter; known: {', '.join(sorted(known))}")
    default = known[key]
    if isinstance(default, str) and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not type(default):
        raise ConfigError(f"{where}: expected {type(default).__name__}, got {value!r}")
    return value


def parse_params(items: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` strings → typed values, checked against the pipeline's parameters and their types."""
    known = pipeline_parameters()
    out: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE")
        if key not in known:
            raise ConfigError(f"--param {key!r}: not a pipeline parameter; known: {', '.join(sorted(known))}")
        try:
            value = text if isinstance(known[key], str) else yaml.load(text, Loader=ParamLoader)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--param {key}: cannot read {text!r} ({exc.problem})") from None
        try:
            out[key] = typed_value(key, value, known, f"--param {key}")
        except ConfigError:
            raise ConfigError(f"--param {key}: expected {type(known[key]).__name__}, got {text!r}") from None
    return out


def check_pod_resources(params: dict[str, object], where: str = "parameter") -> None:
    """Refuse a pod-sizing parameter KFP could not turn into a pod (see the module docstring)."""
    for key, value in params.items():
        if not isinstance(value, str):
            continue
        if key.endswith(("_cpu", "_memory")) and not _QUANTITY.match(value):
            raise ConfigError(f"{where} {key}: {value!r} is not a Kubernetes quantity (e.g. 500m, 4, 16Gi)")
        if key.endswith("_gpus") and value and not (value.isdigit() and int(value) >= 1):
            raise ConfigError(f"{where} {key}: {value!r} must be a GPU count >= 1, or empty for none")
