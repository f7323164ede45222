"""The container image every component runs in (built from the project's Dockerfile).

Set AMOPO_IMAGE before compiling to point the pipeline at your registry's copy; the committed
pipeline YAML uses the default.
"""

import os

from amopo import IMAGE as DEFAULT_IMAGE
IMAGE = os.environ.get("AMOPO_IMAGE", DEFAULT_IMAGE)
