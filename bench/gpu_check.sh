#!/usr/bin/env bash
# GPU check in one command: amopo's CUDA paths on one machine with an NVIDIA GPU, under 8 minutes on one
# H100/H200 once .venv is ready.
#
#     bash bench/gpu_check.sh                              # from anywhere; runs in the project root
#     GPU_PYTHON=/usr/bin/python3 bash bench/gpu_check.sh  # machine without network: use that torch
#
# Parts (a short header each, then a summary table; a part that fails is reported FAILED and the others
# still run; the exit status is 1 if any part failed, 2 if there is no GPU to check):
#   1 setup      .venv via scripts/setup.sh, then a CUDA build of torch 2.13.0 in it (see "torch" below)
#   2 tests      pytest -q tests/test_mixed_precision.py (CUDA cases included), then tests/test_fsdp.py:
#                on NCCL with 2 or more GPUs; with fewer, on CPU/gloo (CUDA_VISIBLE_DEVICES=""), said so
#   3 attention  `amopo prepare` of the shipped sample, then a short bf16 `amopo train` per attention
#                kernel: sdpa; flash_attention_2 when `import flash_attn` works; flex_attention when
#                `amopo train --help` lists it. s/step and tokens/s come from OUTPUT/history.jsonl
#                (median over the steps after the first; tokens are logical prompt + response tokens)
#   4 bench      bench/train_throughput.py on CUDA (bf16) against TRL's CPO-SimPO and DPO trainers:
#                tokens/s, peak CUDA memory, MFU (executed FLOPs) and logical-work rate
# Everything goes to bench/results/gpu_check/ (GPU_CHECK_OUT): <part>.log, train_<kernel>.json and
# .history.jsonl, train_throughput.json, gpus.txt, summary.json and summary.txt.
#
# Time: parts 2-4 together stay within GPU_CHECK_BUDGET_S (470 s): each part gets at most its own
# timeout and never more than what is left of that budget (a part that gets under 10 s is reported
# FAILED, out of time). The budget starts after part 1, which takes seconds when .venv is ready; a
# first install downloads packages (and torch from the CUDA index) and has its own limit, T_SETUP.
#
# torch: scripts/setup.sh installs the CPU wheel of torch 2.13.0. When the venv's torch then sees no
# GPU, this script replaces it with 2.13.0 from https://download.pytorch.org/whl/cu128, which needs
# network. Without network, give GPU_PYTHON: an interpreter whose own torch 2.13.0 has CUDA (ideally
# with the project's other dependencies installed too). A missing .venv is then created from it with
# --system-site-packages, so its torch is used as it is (a CPU torch that setup put into the venv is
# removed again); if setup.sh cannot install offline, amopo itself is installed with --no-deps. An
# existing .venv made without it is kept: remove .venv first to switch.
#
# Settings (environment variables):
#   GPU_PYTHON          see above
#   GPU_CHECK_MODEL     model for parts 3 and 4 (default embedded:smollm2-135m-instruct)
#   GPU_CHECK_PARTS     which parts to run (default "1 2 3 4"; empty: none, only the checks)
#   GPU_CHECK_BUDGET_S  time for parts 2-4 (default 470)
#   GPU_CHECK_OUT       results folder (default bench/results/gpu_check)
#   T_SETUP T_MP T_FSDP T_PREPARE T_TRAIN T_BENCH   part timeouts in seconds (1200 60 90 45 50 240)
#   TRAIN_STEPS         optimizer steps per `amopo train` run (default 8; batch 4 pairs)
#   BENCH_ARGS          bench options (default "--pairs 8 --warmup-steps 2 --steps 4")
#   GPU_CHECK_CPU=1     run anyway without a GPU, to check this script itself (numbers mean nothing;
#                       BENCH_ARGS then defaults to a tiny model and two arms)
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 1
# No GPU, no check (before anything is written).
cpu_mode="${GPU_CHECK_CPU:-0}"
if [ "$cpu_mode" != 1 ]; then
  if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi is missing or finds no device)." >&2
    echo "This script checks the CUDA paths and needs a GPU machine; nothing was run." >&2
    echo "(GPU_CHECK_CPU=1 runs its parts on CPU to check the script itself.)" >&2
    exit 2
  fi
fi

out="${GPU_CHECK_OUT:-$root/bench/results/gpu_check}"
mkdir -p "$out"
# Results of an earlier check go first, so that nothing stale is reported.
rm -f "$out"/*.log "$out"/*.json "$out"/*.jsonl "$out"/summary.txt "$out"/gpus.txt
if [ "$cpu_mode" != 1 ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpus.txt"
fi
# Scratch (prepared data, trained models, MLflow store, summary rows): removed at exit.
work="$(mktemp -d "${TMPDIR:-/tmp}/amopo-gpu-check.XXXXXX")"
trap 'rm -rf "$work"' EXIT
: > "$work/summary.tsv"

model="${GPU_CHECK_MODEL:-embedded:smollm2-135m-instruct}"
parts=" ${GPU_CHECK_PARTS-1 2 3 4} "
budget="${GPU_CHECK_BUDGET_S:-470}"
t_setup="${T_SETUP:-1200}" t_mp="${T_MP:-60}" t_fsdp="${T_FSDP:-90}" t_prepare="${T_PREPARE:-45}"
t_train="${T_TRAIN:-50}" t_bench="${T_BENCH:-240}"
train_steps="${TRAIN_STEPS:-8}"
if [ "$cpu_mode" = 1 ]; then
  bench_args="${BENCH_ARGS:---tiny --arms amopo trl-cpo-simpo}"
else
  bench_args="${BENCH_ARGS:---pairs 8 --warmup-steps 2 --steps 4}"
fi
py="$root/.venv/bin/python"
deadline=""
failed=0

header() { printf '\n=== %s ===\n' "$*"; }

# record PART STATUS SECONDS NOTE: one summary row (tabs and newlines in NOTE become spaces).
record() {
  local note="${4//$'\t'/ }"
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${note//$'\n'/ }" >> "$work/summary.tsv"
  case "$2" in OK|SKIPPED*) ;; *) failed=1 ;; esac
}

# timeout_for OWN: OWN capped by what is left of the budget (OWN itself before the budget starts).
timeout_for() {
  if [ -z "$deadline" ]; then echo "$1"; return; fi
  local left=$((deadline - $(date +%s)))
  if [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
}

# run LOG TIMEOUT CMD...: run CMD with its output shown and kept in LOG; sets rc and secs.
run() {
  local log="$1" limit="$2"; shift 2
  local t0; t0=$(date +%s)
  echo "\$ $* (timeout ${limit} s)" | tee "$log"
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  secs=$(($(date +%s) - t0))
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then echo "(timed out after ${limit} s)" | tee -a "$log"; fi
}

# part NAME OWN_TIMEOUT LOG CMD...: run CMD as one summary row; its note is the log's last line, or what
# CMD wrote to $work/<log name>.note.
part() {
  local name="$1" own="$2" log="$3" limit; limit=$(timeout_for "$2"); shift 3
  local notefile; notefile="$work/$(basename "$log" .log).note"
  rm -f "$notefile"
  if [ "$limit" -lt 10 ] && [ "$limit" -lt "$own" ]; then
    record "$name" "FAILED" 0 "out of time (budget ${budget} s)"; return 1
  fi
  run "$log" "$limit" "$@"
  local note; note=$(cat "$notefile" 2>/dev/null || tail -n 1 "$log")
  if [ "$rc" = 0 ]; then record "$name" OK "$secs" "$note"; return 0; fi
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then note="timed out after ${limit} s"; fi
  record "$name" "FAILED" "$secs" "exit $rc: $note (log: ${log#"$root"/})"
  return 1
}

has_cuda() { "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; }

summary() {
  local any; any="$py"; [ -x "$any" ] || any=python3
  "$any" - "$out" "$work/summary.tsv" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = [dict(zip(("part", "status", "seconds", "note"), line.split("\t", 3)))
        for line in Path(sys.argv[2]).read_text().splitlines() if line]
for r in rows:
    r["seconds"] = int(r["seconds"])
width = max([len(r["part"]) for r in rows] + [4])
lines = [f"{'part':<{width}}  {'status':<8}  {'s':>4}  result", "-" * (width + 24)]
lines += [f"{r['part']:<{width}}  {r['status']:<8}  {r['seconds']:>4}  {r['note']}" for r in rows]
lines.append(f"total {sum(r['seconds'] for r in rows)} s; results in {out}")
text = "\n".join(lines)
print(text)
(out / "summary.txt").write_text(text + "\n")
failed = any(r["status"] != "OK" and not r["status"].startswith("SKIPPED") for r in rows)
(out / "summary.json").write_text(json.dumps({"parts": rows, "failed": failed}, indent=2) + "\n")
EOF
}

finish() {
  header "summary"
  summary
  exit "${1:-$failed}"
}

# --- 1 setup --------------------------------------------------------------------------------------
if [[ "$parts" == *" 1 "* ]]; then
  header "1 setup: .venv with torch 2.13.0 + CUDA"
  setup() {  # run as `bash -c setup` so that T_SETUP bounds it; stops at the first failing command
    set -eo pipefail
    if [ -n "${GPU_PYTHON:-}" ] && [ ! -x "$py" ]; then
      echo "creating .venv from $GPU_PYTHON with --system-site-packages"
      "$GPU_PYTHON" -m venv --system-site-packages "$root/.venv"
    fi
    if ! PYTHON="${GPU_PYTHON:-${PYTHON:-}}" bash scripts/setup.sh; then
      [ -n "${GPU_PYTHON:-}" ] || return 1
      echo "scripts/setup.sh failed (offline?); installing amopo alone with --no-deps"
      "$py" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
    fi
    if [ "$cpu_mode" != 1 ] && ! has_cuda; then
      if [ -n "${GPU_PYTHON:-}" ]; then
        echo "the venv's own torch has no CUDA: removing it so that $GPU_PYTHON's torch is used"
        "$py" -m pip uninstall -y -q torch
      else
        # The local version +cu128 replaces the installed CPU build (kept if the download fails);
        # its CUDA libraries come from the same index, the other dependencies are already there.
        echo "the venv's torch has no CUDA: installing torch 2.13.0+cu128 from the CUDA 12.8 index"
        "$py" -m pip install --disable-pip-version-check -q "torch==2.13.0+cu128" \
          --index-url https://download.pytorch.org/whl/cu128
      fi
    fi
    "$py" - <<'EOF' | tee "$work/setup.note"
import importlib, os, sys, torch
for name in ("amopo", "transformers", "accelerate", "trl", "datasets", "pytest"):
    importlib.import_module(name)
cuda = torch.cuda.is_available()
gpus = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) if cuda else "no GPU"
note = f"torch {torch.__version__} (CUDA {torch.version.cuda}), {torch.cuda.device_count()} GPU(s): {gpus}"
if not torch.__version__.startswith("2.13.0"):
    note += "; WARNING: the project pins torch 2.13.0"
print(note)
sys.exit(0 if cuda or os.environ.get("cpu_mode") == "1" else 1)
EOF
  }
  export -f setup has_cuda
  export root py out work cpu_mode
  part "1 setup" "$t_setup" "$out/setup.log" bash -c setup
fi
if [ ! -x "$py" ]; then
  echo "gpu_check: no .venv/bin/python; run part 1 (or scripts/setup.sh) first." >&2
  finish 1
fi
if [ "$cpu_mode" != 1 ] && ! has_cuda; then
  echo "gpu_check: torch in .venv sees no GPU ($("$py" -c 'import torch; print(torch.__version__)' 2>&1 | tail -n 1))." >&2
  echo "Install a CUDA build of torch 2.13.0 (part 1 does, with network), or set GPU_PYTHON; nothing else was run." >&2
  finish 2
fi
deadline=$(($(date +%s) + budget))
gpus=$("$py" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)

# --- 2 tests --------------------------------------------------------------------------------------
pytest_part() {  # pytest_part NAME TIMEOUT LOG FILE [ENV...]
  local name="$1" limit="$2" log="$3" file="$4"; shift 4
  if [ ! -f "$file" ]; then record "$name" FAILED 0 "$file does not exist"; return; fi
  part "$name" "$limit" "$log" env "$@" "$py" -m pytest -q -p no:cacheprovider "$file"
}
if [[ "$parts" == *" 2 "* ]]; then
  header "2 tests: mixed precision (on the GPU) and FSDP"
  pytest_part "2 tests: mixed precision" "$t_mp" "$out/test_mixed_precision.log" tests/test_mixed_precision.py
  if [ "$gpus" -ge 2 ]; then
    echo "FSDP tests on $gpus GPUs (NCCL)"
    pytest_part "2 tests: fsdp (NCCL, $gpus GPUs)" "$t_fsdp" "$out/test_fsdp.log" tests/test_fsdp.py
  else
    echo "FSDP tests need a GPU per rank; with $gpus GPU(s) they run on CPU/gloo (CUDA_VISIBLE_DEVICES=\"\")"
    pytest_part "2 tests: fsdp (CPU/gloo, $gpus GPU)" "$t_fsdp" "$out/test_fsdp.log" tests/test_fsdp.py \
      CUDA_VISIBLE_DEVICES=
  fi
fi

# --- 3 attention kernels: short bf16 training runs ------------------------------------------------
train_run() {  # train_run KERNEL: one `amopo train` run, then its s/step and tokens/s
  local kernel="$1" dir="$work/train-$1"
  rm -rf "$dir"
  "$py" -m amopo train --data "$work/data" --base-model "$model" --output "$dir" --max-steps "$train_steps" \
    --batch-size 4 --mixed-precision bf16 --attention "$kernel" --warmup-ratio 0 --no-eval-heldout \
    --no-progress --mlflow-tracking-uri "sqlite:///$work/mlflow/mlflow.db" --run-name "gpu-check-$kernel" || return
  cp "$dir/history.jsonl" "$out/train_$kernel.history.jsonl"
  "$py" - "$out/train_$kernel.history.jsonl" "$out/train_$kernel.json" "$kernel" > "$work/train_$kernel.note" <<'EOF'
import json, statistics, sys
history, target, kernel = sys.argv[1:]
steps = [json.loads(line) for line in open(history)]
timed = steps[1:] or steps  # the first step also pays for kernel selection and allocator warm-up
result = {"attention": kernel, "steps": len(steps), "timed_steps": len(timed),
          "s_per_step": statistics.median(s["seconds_per_step"] for s in timed),
          "tokens_per_s": statistics.median(s["tokens_per_s"] for s in timed),
          "first_step_s": steps[0]["seconds_per_step"], "final_loss": steps[-1]["loss"], "history": history}
open(target, "w").write(json.dumps(result, indent=2) + "\n")
print(f"{result['s_per_step']:.3f} s/step, {result['tokens_per_s']:.0f} tokens/s (median of {len(timed)} steps; "
      f"first step {result['first_step_s']:.2f} s), final loss {result['final_loss']:.4f}")
EOF
  cat "$work/train_$kernel.note"
}
if [[ "$parts" == *" 3 "* ]]; then
  header "3 attention: bf16 training with sdpa / flash_attention_2 / flex_attention ($model)"
  mkdir -p "$work/mlflow"
  if part "3 prepare sample" "$t_prepare" "$out/prepare.log" \
      "$py" -m amopo prepare --data-source sample --output "$work/data" --base-model "$model"; then
    export -f train_run
    export py out work model train_steps
    part "3 train sdpa" "$t_train" "$out/train_sdpa.log" bash -c 'train_run "$0"' sdpa
    if "$py" -c 'import flash_attn' >/dev/null 2>&1; then
      part "3 train flash_attention_2" "$t_train" "$out/train_flash_attention_2.log" \
        bash -c 'train_run "$0"' flash_attention_2
    else
      record "3 train flash_attention_2" "SKIPPED" 0 "flash_attn does not import"
    fi
    if "$py" -m amopo train --help 2>/dev/null | grep -q flex_attention; then
      part "3 train flex_attention" "$t_train" "$out/train_flex_attention.log" bash -c 'train_run "$0"' flex_attention
    else
      record "3 train flex_attention" "SKIPPED" 0 "amopo train --attention does not list flex_attention"
    fi
  else
    record "3 train" FAILED 0 "not run: prepare failed"
  fi
fi

# --- 4 throughput against TRL ---------------------------------------------------------------------
if [[ "$parts" == *" 4 "* ]]; then
  header "4 bench: bench/train_throughput.py against TRL (bf16 on CUDA)"
  limit=$(timeout_for "$t_bench")
  # One arm may take a quarter of the part's time (most take less), so a hung arm leaves time to the rest.
  arm_timeout=$(( (limit - 30) / 4 )); [ "$arm_timeout" -ge 30 ] || arm_timeout=30
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of options
  part "4 bench vs TRL" "$limit" "$out/train_throughput.log" \
    "$py" bench/train_throughput.py --model "$model" $bench_args --arm-timeout "$arm_timeout" \
    --json "$out/train_throughput.json"
  if [ -f "$out/train_throughput.json" ]; then
    "$py" - "$out/train_throughput.json" <<'EOF' > "$work/bench.note" || true
import json, sys
d = json.load(open(sys.argv[1]))
parts = []
for arm, r in d["arms"].items():
    if "error" in r:
        parts.append(f"{arm} FAILED")
        continue
    mfu = r["mfu"] if isinstance(r["mfu"], str) else f"{r['mfu']:.1%}"
    parts.append(f"{arm} {r['tokens_per_s']:.0f} tok/s, {r['peak_mb']:.0f} MB, MFU {mfu}")
peak = d["matmul_peak_flops"]
peak = f"{peak / 1e12:.0f} TFLOP/s" if peak >= 1e12 else f"{peak / 1e9:.0f} GFLOP/s"
print("; ".join(parts) + f" (matmul peak {peak}, {d['matmul_peak']['dtype']})")
EOF
    # The last row is the bench's: give it the per-arm figures as its note.
    if [ -s "$work/bench.note" ]; then
      "$py" - "$work/summary.tsv" "$work/bench.note" <<'EOF'
import sys
rows = open(sys.argv[1]).read().splitlines()
name, status, secs, note = rows[-1].split("\t", 3)
extra = open(sys.argv[2]).read().strip()
rows[-1] = "\t".join((name, status, secs, extra if status == "OK" else f"{note}; {extra}"))
open(sys.argv[1], "w").write("\n".join(rows) + "\n")
EOF
    fi
  fi
fi

finish
