#!/usr/bin/env bash
# The main job on the embedded defaults: the whole Kubeflow pipeline on this machine with KFP's local
# runner — prepare the shipped sample data, AMoPO-train the embedded SmolLM2-135M-Instruct, evaluate
# it against its base model, gate, register it in the embedded MLflow store, serve it with
# `amopo serve` on 127.0.0.1, smoke-test the endpoint and promote it to champion.
# It prints one line per step; each step's full output is in runs/pipeline/logs/latest/<step>.log.
# Extra arguments go to `amopo pipeline run`, e.g. --keep-serving, --verbose (print everything as
# well) or --param max_steps=8.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
start=$SECONDS
bash "$root/scripts/setup.sh"
setup=$((SECONDS - start))
cd "$root"
"$root/.venv/bin/amopo" pipeline run --local --work-dir runs/pipeline "$@"
total=$((SECONDS - start))
printf 'main job: %dm%02ds in all (set-up %dm%02ds, pipeline %dm%02ds)\n' $((total / 60)) $((total % 60)) \
  $((setup / 60)) $((setup % 60)) $(((total - setup) / 60)) $(((total - setup) % 60))
