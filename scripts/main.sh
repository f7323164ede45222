#!/usr/bin/env bash
# The main job on the embedded defaults: prepare the shipped sample data, then AMoPO-train the
# embedded SmolLM2-135M-Instruct on it, evaluate it against its base model, logging everything to
# the embedded MLflow store under runs/mlflow.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
amopo="$root/.venv/bin/amopo"
"$amopo" prepare --input sample --output runs/quickstart/data --model embedded:smollm2-135m-instruct
"$amopo" train --config configs/quickstart.yaml "$@"
"$amopo" evaluate --model runs/quickstart/train/model --data runs/quickstart/data --output runs/quickstart/eval
