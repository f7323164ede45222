"""Reading the project's Dockerfile without a Docker engine: its instructions, and where its COPY
lines put the repository's files in the image."""

from __future__ import annotations

import json
import posixpath
import shlex
from pathlib import Path


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined and comments dropped."""
    result, pending = [], ""
    for line in text.splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, args = pending.strip().partition(" ")
        result.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    return result


def _copy_operands(args: str) -> list[str]:
    """Sources then destination of ``COPY``, in shell or JSON form, its ``--flag`` options dropped."""
    tokens = json.loads(args) if args.startswith("[") else shlex.split(args)
    return [t for t in tokens if not t.startswith("--")]


def workdirs(steps: list[tuple[str, str]]) -> list[str]:
    """The WORKDIR in force at each of ``steps`` (each WORKDIR resolved against the one before; ``/`` first)."""
    current, found = "/", []
    for keyword, args in steps:
        if keyword == "WORKDIR":
            current = posixpath.normpath(posixpath.join(current, args))
        found.append(current)
    return found


def image_layout(text: str, root: Path) -> dict[str, str]:
    """{absolute path in the image: repository path} of every COPY, ``dst`` resolved against the
    WORKDIR in force.

    As Docker does: a directory source is copied as its contents into ``dst``; a file source lands
    at ``dst``, or at ``dst/NAME`` when ``dst`` ends with ``/`` or there are several sources.
    """
    steps = instructions(text)
    layout = {}
    for (keyword, args), workdir in zip(steps, workdirs(steps)):
        if keyword != "COPY":
            continue
        *sources, dst = _copy_operands(args)
        into_dir = dst.endswith("/") or len(sources) > 1
        target = posixpath.normpath(posixpath.join(workdir, dst))
        for src in map(posixpath.normpath, sources):
            if into_dir and not (root / src).is_dir():
                layout[posixpath.join(target, posixpath.basename(src))] = src
            else:
                layout[target] = src
    return layout


def repository_file(layout: dict[str, str], image_path: str, root: Path) -> Path | None:
    """The repository file that ends up at ``image_path`` (deepest COPY covering it), or None."""
    covering = [dst for dst in layout if image_path == dst or image_path.startswith(dst.rstrip("/") + "/")]
    if not covering:
        return None
    dst = max(covering, key=len)
    return root / layout[dst] / posixpath.relpath(image_path, dst)
