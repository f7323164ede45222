"""The build machine's pip configuration, carried into an image build.

``pip config list`` prints every setting with its origin (``global.find-links='/opt/wheels'``,
``:env:.find-links='/opt/wheels'`` for a PIP_* variable). The build gets one file holding the
effective ``[global]`` settings, and read-only mounts of the local paths those settings name, so the
image installs from the same places the machine does — a local wheel folder or index included.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

_LINE = re.compile(r"^(?P<section>[^.]*)\.(?P<key>[^=]+)=(?P<value>.*)$")
# Later origins win, as in pip: configuration files, then PIP_* environment variables.
_ORIGIN_RANK = {":env:": 2}


def read_pip_config(python: str = sys.executable) -> dict[str, str]:
    """{key: value} of the settings that apply to ``pip install`` on this machine (global, install and
    environment sections; environment wins), from ``python -m pip config list``."""
    out = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {}
    return parse_config_list(out.stdout)


def parse_config_list(text: str) -> dict[str, str]:
    """Parse ``pip config list`` output (see module docstring); unknown sections are ignored."""
    ranked: dict[str, tuple[int, str]] = {}
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if not match or match["section"] not in (":env:", "global", "install"):
            continue
        value = match["value"].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        rank = _ORIGIN_RANK.get(match["section"], 1 if match["section"] == "install" else 0)
        key = match["key"].strip()
        if key not in ranked or rank >= ranked[key][0]:
            ranked[key] = (rank, value)
    return {key: value for key, (_, value) in ranked.items()}


def local_paths(settings: dict[str, str]) -> list[Path]:
    """The existing local files and folders the settings name (absolute paths and file:// URLs).

    A local index (``file:///srv/pypi/simple``) is mounted from its parent: PEP 503 pages link to
    their files relatively (``../../files/x.whl``), so the files lie beside the index folder."""
    found: list[Path] = []
    for key, value in settings.items():
        for token in shlex.split(value):
            is_url = token.startswith("file://")
            path = Path(token[len("file://"):] if is_url else token)
            if is_url and key in ("index-url", "extra-index-url") and path.parent != path:
                path = path.parent
            if path.is_absolute() and path.exists() and path not in found:
                found.append(path)
    return found


def index_url(settings: dict[str, str]) -> str:
    """The index pip uses first here: the configured ``index-url``, else PyPI."""
    return settings.get("index-url", "https://pypi.org/simple").split()[0]


def config_file_text(settings: dict[str, str]) -> str:
    """An ini file with ``settings`` under ``[global]``."""
    return "[global]\n" + "".join(f"{key} = {value}\n" for key, value in sorted(settings.items()))
