"""The container image every component runs in (built from the project's Dockerfile).

Set AMOPO_IMAGE before compiling to point the pipeline at your registry's copy; the committed
pipeline YAML uses the default.
"""

import os

DEFAULT_IMAGE = "ghcr.io/amopo/amopo:0.1.0"
IMAGE = os.environ.get("AMOPO_IMAGE", DEFAULT_IMAGE)
