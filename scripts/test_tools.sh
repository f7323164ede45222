#!/usr/bin/env bash
# Debian packages the test suite uses beyond Python: buildah (builds and runs the project's image,
# tests/test_image.py) and mmdebstrap (bootstraps its base where no container registry answers);
# docker-registry (a local registry the cluster guide's push goes to), jq and curl (the guide's
# commands; tests/test_cluster_guide.py).
# Installed when missing and running as root; otherwise the tests that need them skip, saying why.
set -euo pipefail
packages=(buildah mmdebstrap docker-registry jq curl)
missing=()
for p in "${packages[@]}"; do
  command -v "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: ${missing[*]} not installed (needs root and apt-get); the in-image tests will skip" >&2
  exit 0
fi
echo "Installing ${missing[*]} ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
