"""docs/reference.md, generated from the code: every option of every `amopo` subcommand (flag, YAML
key, type, default, help: the config dataclasses of amopo.cli.STEPS), every flag of `amopo pipeline`
(its argparse parsers) and every pipeline parameter (type, default and the description KFP reads
from the pipeline's docstring).

    python -m pipelines.reference            # rewrite docs/reference.md
    python -m pipelines.reference --check    # exit 1 when docs/reference.md is stale

tests/test_reference_doc.py fails when the committed file differs from what this writes, and when
a flag or parameter has no help.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
import typing
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "reference.md"


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _default(value: object) -> str:
    """A default as code; a path inside the checkout relative to it, so the page is the same in any clone."""
    if isinstance(value, str) and value.startswith(str(REFERENCE.parents[1]) + "/"):
        value = value[len(str(REFERENCE.parents[1])) + 1:]
    return "`" + (repr(value) if isinstance(value, str) else _cell(value)) + "`" if value is not None else "—"


def _type_name(tp: object) -> str:
    text = getattr(tp, "__name__", None) if not typing.get_args(tp) else None
    return text or str(tp).replace("typing.", "")


def step_options(cls: type) -> list[dict]:
    """Rows of one subcommand's options: flag, key, type, default, help (from the config dataclass)."""
    from amopo import config as config_lib

    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        rows.append({"flag": config_lib._flag(f), "key": f.name, "type": _type_name(hints[f.name]),
                     "default": default, "help": f.metadata.get("help", "")})
    return rows


def pipeline_cli_options() -> dict[str, list[dict]]:
    """Rows of each `amopo pipeline` action's flags (from its argparse parser)."""
    from pipelines.cli import _parser

    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = {}
    for name, action_parser in sub.choices.items():
        rows = []
        for action in action_parser._actions:
            if isinstance(action, argparse._HelpAction) or not action.option_strings:
                continue
            default = None if action.default in (None, argparse.SUPPRESS) else action.default
            kind = "flag" if action.nargs == 0 else (getattr(action.type, "__name__", None) or "str")
            rows.append({"flag": ", ".join(action.option_strings), "type": kind, "default": default,
                         "help": action.help or ""})
        out[name] = rows
    return out


def pipeline_parameter_rows() -> list[dict]:
    """Rows of the pipeline's parameters: name, type, default and the docstring's description."""
    import docstring_parser

    from pipelines.amopo_pipeline import amopo_pipeline

    func = amopo_pipeline.pipeline_func
    described = {p.arg_name: p.description for p in docstring_parser.parse(func.__doc__ or "").params}
    return [{"name": name, "type": getattr(p.annotation, "__name__", str(p.annotation)), "default": p.default,
             "help": described.get(name, "")} for name, p in inspect.signature(func).parameters.items()]


def render() -> str:
    from amopo.cli import STEPS, _load

    lines = ["# Reference", "",
             "Generated from the code by `python -m pipelines.reference`; do not edit "
             "(tests/test_reference_doc.py fails when it is stale).", "",
             "Every `amopo` subcommand takes its options as flags or as keys of a YAML file given with "
             "`--config FILE.yaml`; flags override the file. The pipeline takes its parameters from "
             "`--param KEY=VALUE` or a values file (`--values FILE`, key `parameters:`).", "",
             "- [`amopo` subcommands](#amopo-subcommands)"]
    lines += [f"  - [`amopo {name}`](#amopo-{name})" for name in STEPS]
    lines += ["- [`amopo pipeline`](#amopo-pipeline)", "- [Pipeline parameters](#pipeline-parameters)", "",
              "## amopo subcommands", ""]
    for name, (_, _, _, help_text) in STEPS.items():
        lines += [f"### amopo {name}", "", help_text, "", "| flag | YAML key | type | default | help |",
                  "|---|---|---|---|---|"]
        for row in step_options(_load(name)[0]):
            lines.append(f"| `{row['flag']}` | `{row['key']}` | {_cell(row['type'])} | {_default(row['default'])} "
                         f"| {_cell(row['help'])} |")
        lines.append("")
    lines += ["## amopo pipeline", ""]
    for action, rows in pipeline_cli_options().items():
        lines += [f"### amopo pipeline {action}", "", "| flag | type | default | help |", "|---|---|---|---|"]
        lines += [f"| `{r['flag']}` | {r['type']} | {_default(r['default'])} | {_cell(r['help'])} |" for r in rows]
        lines.append("")
    lines += ["## Pipeline parameters", "", "| parameter | type | default | help |", "|---|---|---|---|"]
    lines += [f"| `{r['name']}` | {r['type']} | {_default(r['default'])} | {_cell(r['help'])} |"
              for r in pipeline_parameter_rows()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.reference", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/reference.md is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        stale = not REFERENCE.is_file() or REFERENCE.read_text(encoding="utf-8") != text
        print(f"{REFERENCE}: {'stale: run python -m pipelines.reference' if stale else 'up to date'}")
        return 1 if stale else 0
    REFERENCE.write_text(text, encoding="utf-8")
    print(f"wrote {REFERENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
