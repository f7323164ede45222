#!/usr/bin/env bash
# Set up .venv and the Debian tools the image tests use if needed, then run the whole test suite
# (offline, CPU; the image is built once, by tests/test_image.py).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
bash "$root/scripts/test_tools.sh"
cd "$root"
exec "$root/.venv/bin/python" -m pytest -q "$@"
