"""The documents name only what exists: every `amopo ...` command line's subcommand and flags, every
pipeline parameter given with ``--param NAME=`` or under a values file's ``parameters:``, every
`scripts/*.sh` and its flags, and every AMOPO_* environment variable.

Read: README.md, docs/*.md, k8s/README.md, and the comments of k8s/values/*.yaml and configs/**/*.yaml.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "k8s" / "README.md", *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "k8s" / "values").glob("*.yaml")), *sorted((ROOT / "configs").rglob("*.yaml"))]
CODE = [*ROOT.glob("amopo/**/*.py"), *ROOT.glob("components/*.py"), *ROOT.glob("pipelines/*.py"),
        *ROOT.glob("scripts/*"), ROOT / "Dockerfile"]


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


@pytest.fixture(scope="module")
def commands() -> dict[str, set[str]]:
    """"amopo SUB [SUB2]" → its flags, for every command the CLI offers."""
    from amopo.cli import build_parser
    from pipelines.cli import _parser as pipeline_parser

    found = {"amopo": _flags(build_parser())}
    for name, sub in _subparsers(build_parser()).items():
        found[f"amopo {name}"] = _flags(sub)
    found["amopo pipeline"] = _flags(pipeline_parser())
    for name, sub in _subparsers(pipeline_parser()).items():
        found[f"amopo pipeline {name}"] = _flags(sub)
    return found


def _command_lines(text: str) -> list[str]:
    """Lines (and inline code spans) that run `amopo ...`, continuation lines joined, comments cut."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in joined.splitlines():
        for span in re.findall(r"`([^`]*\bamopo [^`]*)`", line) or ([line] if re.search(r"(^|[\s$/])amopo ", line)
                                                                     else []):
            found.append(span.split(" #")[0])
    return found


def _invocations(line: str) -> list[list[str]]:
    """Each `amopo ...` invocation on a line as tokens, up to a pipe, `&&` or `;`."""
    try:
        tokens = shlex.split(line, posix=True)
    except ValueError:
        tokens = line.split()
    result, current, at_start = [], None, True
    for token in tokens:
        if token in ("|", "&&", ";", "||", "(", ")", "$") or token.endswith(";"):
            current, at_start = None, True
            continue
        if at_start and token in ("amopo", ".venv/bin/amopo", "$root/.venv/bin/amopo"):
            current = []
            result.append(current)
        elif current is not None:
            current.append(token.rstrip(",.:)"))
        at_start = False
    return result


def test_every_documented_amopo_command_and_flag_exists(commands):
    problems, checked = [], 0
    for doc in DOCS:
        for line in _command_lines(doc.read_text()):
            for args in _invocations(line):
                checked += 1
                words = [a for a in args[:2] if re.fullmatch(r"[a-z][a-z-]*", a)]
                if not words:
                    continue
                key = "amopo " + words[0]
                if key not in commands:
                    problems.append(f"{doc.relative_to(ROOT)}: `amopo {words[0]}` is not a command")
                    continue
                if len(words) > 1 and f"{key} {words[1]}" in commands:
                    key = f"{key} {words[1]}"
                for flag in (a.split("=")[0] for a in args if a.startswith("--")):
                    if flag not in commands[key] and not flag.startswith("--param"):
                        problems.append(f"{doc.relative_to(ROOT)}: `{key} {flag}`: no such flag")
    assert checked > 50, f"only {checked} `amopo` command lines found in the documents: is the reader broken?"
    assert not problems, "\n".join(problems)


def test_every_documented_pipeline_parameter_exists():
    from pipelines.cli import pipeline_parameters

    known = set(pipeline_parameters())
    problems = []
    for doc in DOCS:
        for name in re.findall(r"--param[ =]([a-z_]+)=", doc.read_text()):
            if name not in known:
                problems.append(f"{doc.relative_to(ROOT)}: --param {name}")
    for values in (ROOT / "k8s" / "values").glob("*.yaml"):
        import yaml

        for name in yaml.safe_load(values.read_text()).get("parameters", {}):
            if name not in known:
                problems.append(f"{values.relative_to(ROOT)}: parameters.{name}")
    assert not problems, "\n".join(problems)


def test_every_documented_script_and_its_flags_exist():
    problems = []
    for doc in DOCS:
        for script, rest in re.findall(r"\bscripts/([a-z_]+\.sh)([^\n`|&;]*)", doc.read_text()):
            path = ROOT / "scripts" / script
            if not path.is_file():
                problems.append(f"{doc.relative_to(ROOT)}: scripts/{script} does not exist")
                continue
            if script == "build_image.sh":
                from amopo.image import build

                source = Path(build.__file__).read_text()
                problems += [f"{doc.relative_to(ROOT)}: scripts/{script} {flag}" for flag in
                             re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest.split("#")[0])
                             if f'"{flag}"' not in source]
    assert not problems, "\n".join(problems)


def test_every_documented_amopo_variable_is_read_somewhere():
    code = "\n".join(p.read_text(errors="replace") for p in CODE if p.is_file())
    problems = [f"{doc.relative_to(ROOT)}: {name}" for doc in DOCS
                for name in sorted(set(re.findall(r"\bAMOPO_[A-Z_]+\b", doc.read_text()))) if name not in code]
    assert not problems, "\n".join(problems)


def test_the_checks_catch_a_made_up_name(commands):
    """The same readers on a text with one of each kind of mistake."""
    bad = "Run `amopo train --learning-rat 1` and `amopo pipline run`, or `amopo pipeline submit --dryrun`."
    found = []
    for line in _command_lines(bad):
        for args in _invocations(line):
            key = "amopo " + args[0]
            if key not in commands:
                found.append(args[0])
                continue
            key = f"{key} {args[1]}" if len(args) > 1 and f"{key} {args[1]}" in commands else key
            found += [a for a in args if a.startswith("--") and a not in commands[key]]
    assert found == ["--learning-rat", "pipline", "--dryrun"]
