"""Steering recipe benchmark: does the embedded model steer on verbosity AND keep its plain-prompt
held-out preference accuracy at or above its base model's?

    .venv/bin/python bench/steer_recipe.py                       # every setting of SETTINGS, one after the other
    .venv/bin/python bench/steer_recipe.py --settings mix-sft1-900   # some of them (merged into the JSON)
    .venv/bin/python bench/steer_recipe.py --quick --output DIR  # 2 steps, few pairs: an end-to-end check
    .venv/bin/python bench/steer_recipe.py --measure-only        # measure the trained models again, no training

One source of truth: the recipe is configs/pipeline/steer.yaml, a pipeline values file. Each setting
below is that file's pipeline parameters with a few of them replaced whole (``overrides``; a
``prepare_options`` or ``train_options`` there replaces the file's); the setting without overrides is
the values file itself, the recipe chosen. From the parameters the prepare and train configs are
built exactly as components/prepare.py and components/train.py build them (``component_configs``),
then per setting:

1. ``amopo.data.prepare.prepare`` (the pipeline's prepare step), then ``amopo.train.launch.run_local``
   (its train step, launcher local, one process). The trainer measures held-out preference accuracy
   before and after training on the prepared eval split (``heldout_max_pairs`` of it; 0: all):
   ``plain`` is the accuracy under the plain, unconditioned prompt ("accuracy/plain" of
   ``heldout_base`` and ``heldout_final``; amopo/train/heldout.py).
2. Held-out steering accuracy on verbosity (amopo/evaluate/steer_accuracy.py): on the eval pairs
   whose responses differ in verbosity, the share whose preference follows both requests (the top
   of the scale, then the bottom), with its binomial standard error; ``max_length`` 1024 as
   ``amopo evaluate``'s default.
3. Greedy answer lengths (tokens of the model's tokenizer, amopo/evaluate/steer_length.py) with
   verbosity requested at the bottom (0) and at the top (4) of its scale, on questions the sample
   data does not hold (LENGTH_PROMPTS), ``max_new_tokens`` 96 as ``amopo evaluate``'s default.
4. Capability outside the preference data: the shipped lm-eval tasks (amopo_arithmetic,
   amopo_facts_mc; all 40 documents of each, the model's chat template), as ``amopo evaluate`` runs
   them, with lm-eval's standard errors.

``--measure-only`` repeats 2-4 on the models a earlier run left in the work folder, without
preparing or training again (the row's training figures are kept).

The base model's steering accuracy and lengths are measured once (``base``); its plain accuracy is
each run's ``heldout_base``. Each setting's row records its machine, the load average at its start
and end, and when it finished (settings measured in different invocations share one file). Writes bench/results/steer_recipe.json (or OUTPUT/steer_recipe.json)
after each setting, and the trade-off figure docs/steer_tradeoff.png (steering accuracy against
plain accuracy, the base model marked). No judge is used.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VALUES_FILE = ROOT / "configs" / "pipeline" / "steer.yaml"
RESULTS = ROOT / "bench" / "results" / "steer_recipe.json"
FIGURE = ROOT / "docs" / "steer_tradeoff.png"
DIMENSION = "verbosity"

# Each setting: the values file's parameters with ``overrides`` (none: the recipe itself).
SETTINGS = [
    {"name": "steer-only-sft1-900",
     "about": "the 91 verbosity pairs in both orientations only (--steer-pairs-only, dimension verbosity); "
              "SFT weight 1.0; 900 steps, about 10 epochs (the values file)",
     "overrides": {}},
    {"name": "steer-only-sft1-400",
     "about": "the values file stopped at 400 steps (about 4 epochs)",
     "overrides": {"max_steps": 400}},
    {"name": "steer-only-sft0-900",
     "about": "the values file without the SFT term (SFT weight 0)",
     "overrides": {"train_options": {"sft_weight": 0.0}}},
    {"name": "mix-sft1-900",
     "about": "every train pair (the quality pairs too) + the verbosity pairs reversed, dimension verbosity; "
              "SFT weight 1.0; 900 steps, about 3 epochs",
     "overrides": {"prepare_options": {"steer_both_orientations": True}}},
]
CHOSEN = next(s["name"] for s in SETTINGS if not s["overrides"])

# Questions outside the sample data.
LENGTH_PROMPTS = ["Why is the sky blue?", "What does a compiler do?", "How do vaccines work?",
                  "What is photosynthesis?", "What causes the seasons on Earth?", "How does a refrigerator work?",
                  "What is inflation in economics?", "Why do we dream?"]
MAX_NEW_TOKENS = 96
STEER_MAX_LENGTH = 1024

# --quick: the pipeline of the full run in miniature.
QUICK = {"max_steps": 2, "heldout_max_pairs": 4}
QUICK_EVAL_PAIRS = 8
QUICK_PROMPTS = 2
QUICK_NEW_TOKENS = 8
QUICK_LM_EVAL_LIMIT = 2


def load_parameters(path: Path = VALUES_FILE) -> dict:
    """The values file's pipeline parameters (checked by pipelines.values), over the pipeline's defaults."""
    from pipelines.params import pipeline_parameters
    from pipelines.values import load_values

    params = {name: copy.deepcopy(default) for name, default in pipeline_parameters().items()}
    params.update(load_values(path).parameters)
    return params


def setting_parameters(setting: dict, base: dict | None = None) -> dict:
    """The pipeline parameters of ``setting``: the values file's, with its overrides applied."""
    params = copy.deepcopy(base if base is not None else load_parameters())
    params.update(copy.deepcopy(setting["overrides"]))
    return params


def component_configs(p: dict, *, data: str = "dataset", output: str = "model", mlflow_tracking_uri: str | None = None):
    """(PrepareConfig, TrainConfig) as components/prepare.py and components/train.py build them from
    the pipeline parameters ``p`` (``data``/``output``: the step's dataset and model paths)."""
    from amopo import config as config_lib
    from amopo.data.prepare import PrepareConfig
    from amopo.train.config import TrainConfig

    options = {**p["prepare_options"], "data_source": p["data_source"], "data_format": p["data_format"],
               "eval_source": p["eval_source"] or None, "output": data, "base_model": p["base_model"] or None,
               "max_length": p["max_length"]}
    if p["dimensions"].strip():
        options["dimensions"] = [d.strip() for d in p["dimensions"].split(",") if d.strip()]
    prepare_cfg = PrepareConfig(**options)
    prepare_cfg.validate()
    train_options = {**p["train_options"], "data": data, "base_model": p["base_model"], "objective": p["objective"],
                     "beta": None if p["beta"] < 0 else p["beta"], "gamma": p["gamma"],
                     "learning_rate": p["learning_rate"], "max_steps": p["max_steps"], "batch_size": p["batch_size"],
                     "gradient_accumulation_steps": p["gradient_accumulation_steps"], "max_length": p["max_length"],
                     "heldout_max_pairs": p["heldout_max_pairs"], "mlflow_experiment": p["mlflow_experiment"],
                     "mlflow_tracking_uri": mlflow_tracking_uri or p["mlflow_tracking_uri"] or None, "output": output}
    train_cfg = config_lib.from_dict(TrainConfig, train_options, "train options")
    return prepare_cfg, train_cfg


def _recipe_view(p: dict) -> dict:
    """The parameters that decide the recipe (what the JSON records per setting)."""
    keys = ("data_source", "data_format", "eval_source", "dimensions", "base_model", "max_length", "prepare_options",
            "objective", "beta", "gamma", "learning_rate", "max_steps", "batch_size", "gradient_accumulation_steps",
            "train_options", "heldout_max_pairs")
    return {k: copy.deepcopy(p[k]) for k in keys}


def _dimension(spec: dict):
    from amopo.evaluate.steerability import spec_dimensions

    (dim,) = spec_dimensions(spec, [DIMENSION])
    return dim


def steering(model: str, data: str, spec: dict, *, max_pairs: int) -> dict:
    """Held-out steering accuracy on verbosity: accuracy, its SE, pairs, shift."""
    from amopo.evaluate.steer_accuracy import heldout_steering_accuracy

    m = heldout_steering_accuracy(model, data, spec, [_dimension(spec)], max_length=STEER_MAX_LENGTH,
                                  max_pairs=max_pairs, progress=False)
    return {"accuracy": m[f"steer/{DIMENSION}/accuracy"], "accuracy_se": m[f"steer/{DIMENSION}/accuracy_se"],
            "pairs": int(m[f"steer/{DIMENSION}/accuracy_pairs"]), "shift": m[f"steer/{DIMENSION}/shift"]}


def lengths(model: str, spec: dict, tokenizer_of: str, *, prompts: list[str], max_new_tokens: int) -> dict:
    """Greedy answer lengths in tokens at the bottom and the top of verbosity's scale."""
    from amopo.data.prompts import steered_user_text, steering_system
    from amopo.evaluate.generate import generate_local
    from amopo.evaluate.steer_length import token_lengths
    from amopo.models import load_tokenizer, resolve_model

    dim = _dimension(spec)
    levels = {"low": float(dim.low), "high": float(dim.high)}
    asked = [steered_user_text(spec, {DIMENSION: level}, text) for level in levels.values() for text in prompts]
    answers, _ = generate_local(resolve_model(model), asked, max_new_tokens=max_new_tokens, batch_size=len(asked),
                                progress=False, system=steering_system(spec))
    tokens = token_lengths(load_tokenizer(resolve_model(tokenizer_of)), answers)
    n = len(prompts)
    out = {"levels": levels, "prompts": list(prompts), "max_new_tokens": max_new_tokens}
    for i, side in enumerate(levels):
        part = tokens[i * n:(i + 1) * n]
        out[f"{side}_tokens"] = part
        out[f"{side}_mean"] = statistics.fmean(part)
        out[f"{side}_answers"] = answers[i * n:(i + 1) * n]
    return out


def capability(model: str, *, quick: bool) -> dict:
    """The shipped lm-eval tasks on ``model`` (a folder or embedded id): {metric: value} with lm-eval's
    ``…_stderr`` beside each."""
    from amopo.evaluate.lm_eval_tasks import DEFAULT_TASKS, run_lm_eval
    from amopo.models import resolve_model

    metrics, _ = run_lm_eval(resolve_model(model), DEFAULT_TASKS, limit=QUICK_LM_EVAL_LIMIT if quick else 0)
    return dict(sorted(metrics.items()))


def measures(model: str, data: str, spec: dict, *, quick: bool) -> dict:
    """Steps 2-4 of the module docstring on ``model``: steering, lengths, capability."""
    return {"steer": steering(model, data, spec, max_pairs=QUICK_EVAL_PAIRS if quick else 0),
            "lengths": lengths(model, spec, model, prompts=LENGTH_PROMPTS[:QUICK_PROMPTS] if quick else LENGTH_PROMPTS,
                               max_new_tokens=QUICK_NEW_TOKENS if quick else MAX_NEW_TOKENS),
            "capability": capability(model, quick=quick)}


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {"platform": platform.platform(), "cpu": model or platform.processor(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available()
            else None, "loadavg_1min_at_start": os.getloadavg()[0]}


def run_setting(setting: dict, params: dict, work: Path, *, quick: bool) -> dict:
    from amopo.data.prepare import prepare
    from amopo.steering import load_spec
    from amopo.train.launch import run_local

    folder = work / setting["name"]
    data, output = folder / "data", folder / "train"
    prepare_cfg, train_cfg = component_configs(params, data=str(data), output=str(output),
                                               mlflow_tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    train_cfg.progress = False
    folder.mkdir(parents=True, exist_ok=True)
    host = machine()
    t0 = time.perf_counter()
    manifest = prepare(prepare_cfg, echo=None)
    t1 = time.perf_counter()
    summary = run_local(train_cfg, 1)
    t2 = time.perf_counter()
    model = str(output / "model")
    measured = measures(model, str(data), load_spec(model), quick=quick)
    t3 = time.perf_counter()
    base, final = summary.get("heldout_base") or {}, summary.get("heldout_final") or {}
    return {"name": setting["name"], "about": setting["about"], "overrides": setting["overrides"],
            "parameters": _recipe_view(params),
            "train_pairs": manifest["counts"]["train"], "eval_pairs": manifest["counts"]["eval"],
            "reversed_pairs": ((manifest.get("steer") or {}).get("splits", {}).get("train", {}).get("added", 0)),
            "steps": summary.get("steps"),
            "steer": measured["steer"],
            "plain": {"model": final.get("accuracy/plain"), "base": base.get("accuracy/plain"),
                      "pairs": int(final.get("pairs", 0)), "max_length": train_cfg.max_length,
                      "margin_model": final.get("margin/plain"), "margin_base": base.get("margin/plain")},
            "conditioned_mean": {"model": final.get("accuracy/mean_dimensions"),
                                 "base": base.get("accuracy/mean_dimensions")},
            "lengths": measured["lengths"],
            "capability": measured["capability"],
            "wall_s": {"prepare": round(t1 - t0, 1), "train": round(t2 - t1, 1), "measure": round(t3 - t2, 1),
                       "total": round(t3 - t0, 1)},
            "machine": {**host, "loadavg_1min_at_end": os.getloadavg()[0]},
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def measure_base(params: dict, work: Path, *, quick: bool, spec: dict, data: str) -> dict:
    from amopo.models import resolve_model

    model = params["base_model"]
    t0 = time.perf_counter()
    out = {"model": model, **measures(resolve_model(model), data, spec, quick=quick)}
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def remeasure(chosen: list[dict], work: Path, kept: dict, doc: dict, *, quick: bool, values: dict) -> None:
    """``--measure-only``: measures() again on each chosen setting's trained model under ``work``
    (its row keeps the training figures) and on the base model, on the first setting's data."""
    from amopo.errors import ConfigError
    from amopo.steering import load_spec

    for setting in chosen:
        folder = work / setting["name"]
        if not (folder / "train" / "model").is_dir() or not (folder / "data").is_dir():
            raise ConfigError(f"--measure-only: setting '{setting['name']}' has no trained model under {folder} "
                              "(train/model and data); run it first, or point --work-dir at its run")
        if setting["name"] not in kept:
            raise ConfigError(f"--measure-only: setting '{setting['name']}' has no recorded row to update; "
                              "run it without --measure-only")
    for setting in chosen:
        folder, host, t0 = work / setting["name"], machine(), time.perf_counter()
        model = str(folder / "train" / "model")
        kept[setting["name"]].update(measures(model, str(folder / "data"), load_spec(model), quick=quick))
        kept[setting["name"]]["remeasured"] = {
            "machine": {**host, "loadavg_1min_at_end": os.getloadavg()[0]}, "wall_s": round(time.perf_counter() - t0, 1),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        print(f"steer_recipe: {setting['name']}: measured again", flush=True)
    first = work / chosen[0]["name"]
    doc["base"] = measure_base(values, work, quick=quick, spec=load_spec(first / "train" / "model"),
                               data=str(first / "data"))


def _binomial_se(rate: float, n: int) -> float:
    return math.sqrt(rate * (1.0 - rate) / n) if n else 0.0


def plot(doc: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    base_plain = [s["plain"]["base"] for s in doc["settings"] if s["plain"]["base"] is not None]
    if doc.get("base"):
        bp = statistics.fmean(base_plain) if base_plain else math.nan
        pairs = next((s["plain"]["pairs"] for s in doc["settings"] if s["plain"]["base"] is not None), 0)
        ax.errorbar([bp], [doc["base"]["steer"]["accuracy"]], xerr=[_binomial_se(bp, pairs)],
                    yerr=[doc["base"]["steer"]["accuracy_se"]], fmt="s", color="black", capsize=3, label="base model")
        ax.axvline(bp, color="grey", linestyle=":", linewidth=1)
    for s in doc["settings"]:
        if s["plain"]["model"] is None:
            continue
        marker = "*" if s["name"] == doc.get("chosen") else "o"
        ax.errorbar([s["plain"]["model"]], [s["steer"]["accuracy"]], xerr=[_binomial_se(s["plain"]["model"],
                                                                                   s["plain"]["pairs"])],
                    yerr=[s["steer"]["accuracy_se"]], fmt=marker,
                    markersize=11 if marker == "*" else 7, capsize=3, label=s["name"])
    ax.set_xlabel("plain-prompt held-out preference accuracy ± SE")
    ax.set_ylabel(f"held-out steering accuracy ({DIMENSION}) ± SE")
    ax.set_title("Steering against alignment (SmolLM2-135M-Instruct)" if not doc.get("quick")
                 else "Steering against alignment (--quick)")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# (column, lm-eval metric, its standard error) of the capability columns
CAPABILITY = [("arithmetic exact match", "lm_eval/amopo_arithmetic/exact_match/last_number",
               "lm_eval/amopo_arithmetic/exact_match_stderr/last_number"),
              ("facts_mc acc", "lm_eval/amopo_facts_mc/acc", "lm_eval/amopo_facts_mc/acc_stderr")]


def _capability_cells(row: dict) -> str:
    got = row.get("capability") or {}
    return " | ".join(f"{got[key]:.2f} ± {got.get(se, math.nan):.2f}" if key in got else ""
                      for _, key, se in CAPABILITY)


def markdown_table(doc: dict) -> str:
    """The results as a Markdown table (``--table``)."""
    rows = ["| setting | train pairs (reversed) | steps | steering accuracy ± SE (pairs) | shift | plain accuracy, "
            "model | base | tokens at verbosity 0 | at 4 | " + " | ".join(c for c, _, _ in CAPABILITY) + " | wall time |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(CAPABILITY) + "---:|"]
    if doc.get("base"):
        b = doc["base"]
        rows.append(f"| base model | | | {b['steer']['accuracy']:.2f} ± {b['steer']['accuracy_se']:.2f} "
                    f"({b['steer']['pairs']}) | {b['steer']['shift']:.3f} | | | {b['lengths']['low_mean']:.1f} | "
                    f"{b['lengths']['high_mean']:.1f} | {_capability_cells(b)} | |")
    for s in doc.get("settings", []):
        name = f"**{s['name']}**" if s["name"] == doc.get("chosen") else s["name"]
        pl = s["plain"]
        rows.append(f"| {name} | {s['train_pairs']} ({s['reversed_pairs']}) | {s['steps']} | "
                    f"{s['steer']['accuracy']:.2f} ± {s['steer']['accuracy_se']:.2f} ({s['steer']['pairs']}) | "
                    f"{s['steer']['shift']:.3f} | {pl['model']:.3f} | {pl['base']:.3f} ({pl['pairs']} pairs) | "
                    f"{s['lengths']['low_mean']:.1f} | {s['lengths']['high_mean']:.1f} | {_capability_cells(s)} | "
                    f"{s['wall_s']['total'] / 60:.0f} min |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", nargs="+", default=None, help="names of SETTINGS to run (default: all)")
    ap.add_argument("--quick", action="store_true", help="2 steps, few pairs, short answers (an end-to-end check)")
    ap.add_argument("--base-model", default=None, help="replace the base model (e.g. a tiny test model)")
    ap.add_argument("--output", default=None, help="folder for the JSON and the figure (default: bench/results, docs)")
    ap.add_argument("--work-dir", default=None, help="prepared data and runs (default: runs/steer_recipe)")
    ap.add_argument("--table", action="store_true", help="print the recorded results as a Markdown table and stop")
    ap.add_argument("--measure-only", action="store_true",
                    help="measure the models an earlier run left in the work folder again (steering, lengths, "
                         "lm-eval) and the base model; no preparing or training")
    args = ap.parse_args(argv)

    results = Path(args.output) / "steer_recipe.json" if args.output else RESULTS
    if args.table:
        print(markdown_table(json.loads(results.read_text())))
        return 0
    names = [s["name"] for s in SETTINGS]
    chosen = [s for s in SETTINGS if args.settings is None or s["name"] in args.settings]
    unknown = set(args.settings or ()) - set(names)
    if unknown:
        ap.error(f"unknown setting(s) {sorted(unknown)}; known: {names}")
    figure = Path(args.output) / "steer_tradeoff.png" if args.output else FIGURE
    work = Path(args.work_dir) if args.work_dir else (Path(args.output) / "runs" if args.output
                                                      else ROOT / "runs" / "steer_recipe")

    values = load_parameters()
    if args.base_model:
        values["base_model"] = args.base_model

    if args.measure_only:
        doc = json.loads(results.read_text()) if results.is_file() else {}
        if bool(doc.get("quick")) != bool(args.quick) or not doc.get("settings"):
            ap.error(f"--measure-only updates the rows of {results}: it holds no "
                     f"{'--quick ' if args.quick else ''}results (run without --measure-only first)")
    else:
        doc = json.loads(results.read_text()) if results.is_file() and not args.quick else {}
        if doc.get("quick"):
            doc = {}
    doc.update({"benchmark": "steer_recipe", "values_file": str(VALUES_FILE.relative_to(ROOT)), "chosen": CHOSEN,
                "dimension": DIMENSION, "quick": bool(args.quick), "machine": machine(),
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "command": "bench/steer_recipe.py " + " ".join(argv if argv is not None else sys.argv[1:])})
    kept = {s["name"]: s for s in doc.get("settings", []) if s["name"] in names}

    def write():
        doc["settings"] = [kept[n] for n in names if n in kept]
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(doc, indent=2) + "\n")
        plot(doc, figure)

    if args.measure_only:
        remeasure(chosen, work, kept, doc, quick=args.quick, values=values)
        write()
        print(markdown_table(doc))
        print(f"steer_recipe: wrote {results} and {figure}")
        return 0
    for setting in chosen:
        params = setting_parameters(setting, values)
        if args.quick:
            params.update(QUICK)
        print(f"steer_recipe: {setting['name']}: {json.dumps(setting['overrides'])}", flush=True)
        row = run_setting(setting, params, work, quick=args.quick)
        kept[setting["name"]] = row
        if not doc.get("base") or args.quick:
            from amopo.steering import load_spec

            folder = work / setting["name"]
            doc["base"] = measure_base(params, work, quick=args.quick, spec=load_spec(folder / "train" / "model"),
                                       data=str(folder / "data"))
        print(f"steer_recipe: {setting['name']}: steering {row['steer']['accuracy']:.3f} ± "
              f"{row['steer']['accuracy_se']:.3f} ({row['steer']['pairs']} pairs), plain {row['plain']['model']:.3f} "
              f"(base {row['plain']['base']:.3f}, {row['plain']['pairs']} pairs), tokens at low/high "
              f"{row['lengths']['low_mean']:.1f}/{row['lengths']['high_mean']:.1f}, {row['wall_s']['total']:.0f} s",
              flush=True)
        doc["machine"]["loadavg_1min_at_end"] = os.getloadavg()[0]
        write()
    print(markdown_table(doc))
    print(f"steer_recipe: wrote {results} and {figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
