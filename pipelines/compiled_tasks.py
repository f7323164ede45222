"""The container tasks of a compiled pipeline (KFP IR YAML) and the input values they get for given
arguments, resolved as the KFP backend resolves them: through every DAG down to the pipeline's own
parameters. What only a run can know (another task's output, a loop item) stays a :class:`RuntimeValue`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from amopo.errors import ConfigError

_PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}")


class RuntimeValue(str):
    """A value only the run knows, shown as ``<what at run time>``."""

    def __new__(cls, what: str):
        return super().__new__(cls, f"<{what} at run time>")


@dataclass
class ContainerTask:
    """One container task: its name, the DAG path to it, its executor, its resolved inputs, and the
    inputs of the DAG around it (``scope``), where kfp-kubernetes settings take their parameters from."""

    name: str
    path: tuple[str, ...]
    executor: str
    inputs: dict[str, object]
    scope: dict[str, object]

    def resolve(self, text: str) -> object:
        """``text`` with the task's ``{{$.inputs.parameters['NAME']}}`` placeholders filled in; a text that is
        one placeholder becomes the value itself (a dict stays a dict)."""
        whole = _PLACEHOLDER.fullmatch(text)
        if whole:
            return self._input(whole.group(1))
        return _PLACEHOLDER.sub(lambda m: str(self._input(m.group(1))), text)

    def _input(self, name: str) -> object:
        if name not in self.inputs:
            raise ConfigError(f"task {self.name}: the compiled pipeline refers to input {name!r}, which it lacks")
        return self.inputs[name]


def load_compiled(path: str | Path) -> tuple[dict, dict]:
    """(pipeline spec, platform spec) of the compiled pipeline at ``path``."""
    docs = [d for d in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if d]
    if not docs or "root" not in docs[0]:
        raise ConfigError(f"{path}: not a compiled KFP pipeline (no root DAG)")
    return docs[0], (docs[1] if len(docs) > 1 else {})


def _typed(value: object, parameter_type: str | None) -> object:
    # The IR writes every number as a float; an integer parameter is an int to its component.
    if parameter_type == "NUMBER_INTEGER" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def root_arguments(spec: dict, arguments: dict) -> dict:
    """The pipeline's parameters as a run gets them: the compiled defaults, then ``arguments``."""
    out = {}
    for name, definition in spec["root"].get("inputDefinitions", {}).get("parameters", {}).items():
        if name in arguments:
            out[name] = arguments[name]
        elif "defaultValue" in definition:
            out[name] = _typed(definition["defaultValue"], definition.get("parameterType"))
    unknown = set(arguments) - set(out)
    if unknown:
        raise ConfigError(f"the compiled pipeline has no parameter(s) {', '.join(sorted(unknown))}")
    return out


def _input_value(name: str, spec_in: dict, scope: dict, task: str) -> object:
    if "componentInputParameter" in spec_in:
        source = spec_in["componentInputParameter"]
        return scope.get(source, RuntimeValue(source.removeprefix("pipelinechannel--")))
    if "runtimeValue" in spec_in:
        return spec_in["runtimeValue"].get("constant")
    if "taskOutputParameter" in spec_in:
        out = spec_in["taskOutputParameter"]
        return RuntimeValue(f"{out['producerTask']}.{out['outputParameterKey']}")
    if "taskFinalStatus" in spec_in:
        return RuntimeValue(f"{task}.final status")
    raise ConfigError(f"task {task}: input {name} has a source the dry run does not know: {sorted(spec_in)}")


def container_tasks(spec: dict, arguments: dict) -> list[ContainerTask]:
    """Every container task of the compiled pipeline ``spec`` (nested DAGs included), with its inputs
    resolved for ``arguments`` (pipeline parameter → value; defaults fill the rest)."""
    found: list[ContainerTask] = []

    def walk(dag: dict, scope: dict, path: tuple[str, ...]) -> None:
        for name, task in dag.get("tasks", {}).items():
            component = spec["components"][task["componentRef"]["name"]]
            types = {k: d.get("parameterType") for k, d in
                     component.get("inputDefinitions", {}).get("parameters", {}).items()}
            inputs = {key: _typed(_input_value(key, spec_in, scope, name), types.get(key))
                      for key, spec_in in task.get("inputs", {}).get("parameters", {}).items()}
            if "dag" in component:
                walk(component["dag"], inputs, (*path, name))
            else:
                found.append(ContainerTask(name=name, path=path, executor=component["executorLabel"], inputs=inputs,
                                           scope=scope))

    walk(spec["root"]["dag"], root_arguments(spec, arguments), ())
    return found
