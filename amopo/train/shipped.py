"""Files the project ships beside its package, found the same way in a checkout and in the image.

The image installs the project editable in /opt/amopo (see the Dockerfile), so there, as in a
checkout, the folder above the ``amopo`` package holds ``configs/``.
"""

from __future__ import annotations

from pathlib import Path

import amopo

# The FSDP2 config for `amopo train --fsdp-config`, relative to the project folder.
FSDP_CONFIG = "configs/accelerate/fsdp.yaml"


def project_dir() -> Path:
    """The folder holding the ``amopo`` package and ``configs/`` (a checkout, or /opt/amopo in the image)."""
    return Path(amopo.__file__).resolve().parents[1]


def shipped_fsdp_config() -> Path:
    """The shipped FSDP2 config: ``configs/accelerate/fsdp.yaml`` under :func:`project_dir`."""
    return project_dir() / FSDP_CONFIG


def shipped_or_local(path: str | Path) -> Path:
    """``path`` as given when it exists (absolute, or relative to the working folder); else a relative
    ``path`` under :func:`project_dir`, so ``configs/accelerate/fsdp.yaml`` names the shipped file from
    any folder, in a checkout and in the image alike."""
    given = Path(path).expanduser()
    if given.exists() or given.is_absolute():
        return given
    return project_dir() / given
