#!/usr/bin/env bash
# Build the project's image from its Dockerfile with docker, podman or buildah, whichever works here.
# Options: see `bash scripts/build_image.sh --help` (amopo/image/build.py). Needs only python3 (3.11).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
exec "$python" -m amopo.image.build "$@"
