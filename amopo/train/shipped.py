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
