"""`amopo evaluate`: score a model folder or a served model, against a baseline, with a judge.

    amopo evaluate --model DIR_OR_URL [--baseline DIR_OR_URL_OR_OUTPUTS.jsonl] [--judge DIR_OR_URL]
                   [--tasks T ...] [--data PREPARED_DIR] --output DIR

Parts (each optional):
1. pairwise: greedy answers of model and baseline to an instruction set; a judge compares every
   pair in both orders → raw and length-controlled win rate with standard errors, average lengths;
   the judge also rates every answer 1–5 per dimension → means and model − baseline deltas.
2. held-out preference accuracy on a prepared folder's eval split (``--data``; local models).
3. steerability of a model with a conditioning spec (``amopo.evaluate.steerability``: answers at
   low, middle and high requested levels rated by the judge, which never sees the request; and
   ``amopo.evaluate.steer_accuracy`` on ``--data``'s held-out pairs), the base model beside it;
   verbosity also by answer length, calibrated on ``--data``'s responses (``amopo.evaluate.steer_length``),
   and with ``--steer-side-effects`` how the other steered dimensions' ratings move.
4. lm-eval tasks (``--tasks``; shipped YAML tasks by default). On an endpoint, generation tasks go
   through its chat route and multiple-choice ones through ``/completions`` (echo + logprobs),
   tokenised with ``--model-tokenizer`` (the served model's folder or hub id); without it
   multiple-choice tasks are skipped and the report says why (``amopo.evaluate.lm_eval_tasks``).

Outputs in ``--output``: ``metrics.json`` (flat), ``report.json`` (settings, decoding, judge,
lm-eval details), ``samples.jsonl``/``samples.csv`` (instruction, both answers, verdicts,
lengths, scores), ``steer_samples.jsonl``/``.csv`` (every steered answer, its request and rating),
``outputs/{model,baseline}.jsonl`` (AlpacaEval format), the figures (``steerability.png``; with verbosity
steered, ``steer_length.png``: length and rating against the requested level), and ``eval_config.yaml``. The
folder is written whole or not at all; everything is logged to MLflow (see ``amopo.evaluate.report``).

Default budget, sized for the main job (SmolLM2-135M on 2 CPU cores): 16 of the 100 shipped
instructions, 96 new tokens per answer, the embedded model as judge, 3 dimensions, both shipped
lm-eval tasks on 20 examples each, 32 held-out pairs (the main job's training-time held-out cap);
steering on 8 of those instructions × 3 levels × each scored dimension of the spec, per model.
Raise ``--num-instructions 0 --lm-eval-limit 0 --heldout-max-pairs 0`` for everything.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from amopo import config as config_lib
from amopo.config import field
from amopo.errors import ConfigError
from amopo.evaluate.endpoint import ChatEndpoint, is_endpoint
from amopo.evaluate.lm_eval_tasks import DEFAULT_TASKS
from amopo.models import EMBEDDED_SMOLLM2

DEFAULT_DIMENSIONS = ["helpfulness", "correctness", "instruction_following"]
MARKER = "eval_config.yaml"  # a folder holding it is an evaluation output and may be replaced


@dataclass
class EvaluateConfig:
    model: str = field("", help="model to evaluate: Hugging Face folder (e.g. runs/x/train/model), hub id, "
                                "embedded:smollm2-135m-instruct, or an OpenAI-compatible endpoint URL")
    model_name: str | None = field(None, help="served model name at the model endpoint (default: the first it lists)")
    model_tokenizer: str | None = field(None, help="endpoint model: its tokenizer (the served model's folder or hub "
                                                   "id); lm-eval's multiple-choice tasks need it to score choices "
                                                   "through /completions (skipped without it)")
    api_key_env: str | None = field(None, help="environment variable holding the API key of the model and "
                                               "baseline endpoints (none by default)")
    baseline: str | None = field(None, help="baseline: folder, hub id, endpoint URL, or an outputs JSONL "
                                            "(instruction, output); default: the training run's base model")
    baseline_name: str | None = field(None, help="served model name at the baseline endpoint")
    judge: str = field(EMBEDDED_SMOLLM2, help="judge: a local Hugging Face model (decides by the log-probabilities "
                                              "of the verdict tokens) or an OpenAI-compatible endpoint URL")
    judge_model_name: str | None = field(None, help="served model name at the judge endpoint")
    judge_api_key_env: str | None = field(None, help="environment variable holding the judge endpoint's API key")
    judge_prompts: str = field("v1", help="judge prompt set: a shipped version (v1) or a folder of your own")
    judge_top_k: int = field(20, help="local judge: a verdict is unparseable unless a label token is among "
                                      "the top-k next tokens")
    judge_max_tokens: int = field(16, help="endpoint judge: reply length limit in tokens")
    judge_batch_size: int = field(4, help="local judge: prompts per forward pass")
    dimensions: list[str] = field(default_factory=lambda: list(DEFAULT_DIMENSIONS),
                                  help="dimensions the judge rates 1-5 (rubrics in the prompt set)")
    pairwise: bool = field(True, help="generate answers, judge them, report win rates and dimension scores")
    instructions: str = field("shipped", help="instruction set: shipped | alpaca_eval (hub) | a JSONL/JSON file")
    num_instructions: int = field(16, help="instructions used, spread evenly over the set (0: all)")
    max_new_tokens: int = field(96, help="generation limit per answer (greedy decoding)")
    batch_size: int = field(16, help="local generation: prompts decoded together (on CPU a batch step costs "
                                     "about as much as a single prompt's); lm-eval batch size")
    max_answer_chars: int = field(3000, help="answers are cut to this many characters inside judge prompts")
    concurrency: int = field(4, help="parallel requests to endpoints")
    retries: int = field(3, help="retries (with exponential back-off) of a failed endpoint request")
    timeout: float = field(120.0, help="seconds before an endpoint request times out")
    lc_bootstrap: int = field(200, help="bootstrap resamples for the length-controlled win rate's standard error")
    lm_eval_tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS),
                             help="lm-eval tasks: shipped (amopo_arithmetic, amopo_facts_mc) or registry names "
                                  "(ifeval, mmlu, gsm8k … need the hub); '' for none")
    lm_eval_limit: int = field(20, help="examples per lm-eval task (0: all)")
    lm_eval_chat_template: bool = field(True, help="apply the model's chat template in lm-eval (when it has one)")
    data: str = field("", help="prepared data folder: held-out preference accuracy on its eval split")
    heldout_max_pairs: int = field(32, help="cap on held-out pairs, the first ones of the split (0: all)")
    max_length: int = field(1024, help="held-out accuracy: prompt + response token cutoff")
    steer: bool = field(True, help="steerability of a model with a conditioning spec: its answers at low, middle "
                                   "and high requested levels rated by the judge, and steering accuracy on --data's "
                                   "held-out pairs; the base model beside it")
    steer_spec: str = field("", help="conditioning spec file (amopo_conditioning.json) for a model whose folder "
                                     "has none, e.g. an endpoint (empty: the model folder's)")
    steer_dimensions: list[str] = field(default_factory=list,
                                        help="dimensions to steer (empty: every scored dimension of the spec)")
    steer_num_instructions: int = field(8, help="steering: instructions of the win-rate set (spread evenly over "
                                               "it) answered per dimension and level (0: all of them)")
    steer_bootstrap: int = field(200, help="bootstrap resamples of instructions for the Spearman correlation's "
                                           "standard error")
    steer_side_effects: bool = field(False, help="steering side effects: the judge also rates the answers at each "
                                                 "steered dimension's low and high level on the other steered "
                                                 "dimensions (2 × (dimensions − 1) more ratings per instruction and "
                                                 "dimension, per model; off by default to keep the evaluation's time)")
    seed: int = field(0, help="seed for lm-eval and the bootstrap")
    output: str = field("runs/evaluate", help="output folder (replaced if it holds an earlier evaluation)")
    mlflow_tracking_uri: str | None = field(None, help="MLflow URI; default: the training run's, else "
                                                       "$MLFLOW_TRACKING_URI, else the sqlite store in runs/mlflow")
    mlflow_experiment: str = field("amopo", help="MLflow experiment of a new evaluation run")
    mlflow_run_id: str | None = field(None, help="log into this run (default: the training run beside the model)")
    new_mlflow_run: bool = field(False, help="log into a new run linked to the training run instead of into it")
    run_name: str | None = field(None, help="name of a new MLflow run (default: evaluate)")
    mlflow: bool = field(True, help="log to MLflow")
    progress: bool = field(True, help="show progress bars")

    def validate(self) -> None:
        self.lm_eval_tasks = [t for t in self.lm_eval_tasks if t.strip()]
        self.dimensions = [d for d in self.dimensions if d.strip()]
        self.steer_dimensions = [d for d in self.steer_dimensions if d.strip()]
        for name in ("max_new_tokens", "batch_size", "judge_batch_size", "judge_top_k", "judge_max_tokens",
                     "concurrency", "max_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"evaluate config: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_instructions", "lm_eval_limit", "heldout_max_pairs", "retries", "lc_bootstrap",
                     "steer_num_instructions", "steer_bootstrap"):
            if getattr(self, name) < 0:
                raise ConfigError(f"evaluate config: {name} must be >= 0, got {getattr(self, name)}")


# ---------------------------------------------------------------------------------------------
# Answers


def _is_outputs_file(spec: str | None) -> bool:
    return bool(spec) and spec.endswith((".jsonl", ".json"))


def _answers(spec: str, served_name: str | None, texts: list[str], cfg: EvaluateConfig, who: str,
             system: str | None = None):
    from amopo.evaluate import generate

    if is_endpoint(spec):
        endpoint = ChatEndpoint(spec, served_name, api_key_env=cfg.api_key_env, retries=cfg.retries,
                                timeout=cfg.timeout)
        return generate.generate_endpoint(endpoint, texts, max_new_tokens=cfg.max_new_tokens,
                                          concurrency=cfg.concurrency, seed=cfg.seed, progress=cfg.progress,
                                          desc=f"generating ({who})", system=system)
    if _is_outputs_file(spec):
        return generate.read_outputs(spec, texts)
    from amopo.models import resolve_model

    return generate.generate_local(resolve_model(spec), texts, max_new_tokens=cfg.max_new_tokens,
                                   batch_size=cfg.batch_size, progress=cfg.progress, desc=f"generating ({who})",
                                   system=system)


def _judge(cfg: EvaluateConfig, prompts):
    from amopo.evaluate.judges import EndpointJudge, LocalJudge

    if is_endpoint(cfg.judge):
        endpoint = ChatEndpoint(cfg.judge, cfg.judge_model_name, api_key_env=cfg.judge_api_key_env, retries=cfg.retries,
                                timeout=cfg.timeout)
        return EndpointJudge(endpoint, prompts, max_tokens=cfg.judge_max_tokens, concurrency=cfg.concurrency,
                             max_answer_chars=cfg.max_answer_chars, progress=cfg.progress)
    return LocalJudge(cfg.judge, prompts, top_k=cfg.judge_top_k, batch_size=cfg.judge_batch_size,
                      max_answer_chars=cfg.max_answer_chars, progress=cfg.progress)


def _instruction_items(cfg: EvaluateConfig) -> list[dict]:
    """The win-rate instruction set: ``num_instructions`` of the set, spread evenly."""
    from amopo.evaluate import generate

    return generate.select_evenly(generate.load_instructions(cfg.instructions), cfg.num_instructions)


def _pairwise_answers(cfg: EvaluateConfig, items: list[dict], baseline: str | None, folder: Path,
                      report: dict) -> dict[str, list[str]]:
    """Answers of the model (and baseline) to the instructions, written to ``folder/outputs``."""
    from amopo.evaluate import generate

    texts = [item["instruction"] for item in items]
    outputs = {"model": _answers(cfg.model, cfg.model_name, texts, cfg, "model")}
    if baseline:
        outputs["baseline"] = _answers(baseline, cfg.baseline_name, texts, cfg, "baseline")
    (folder / "outputs").mkdir()
    for side, (answers, info) in outputs.items():
        generate.write_outputs(folder / "outputs" / f"{side}.jsonl", texts, answers, str(info.get("model", side)))
    report["decoding"] = {side: info for side, (_, info) in outputs.items()}
    report["instructions"] = {"set": cfg.instructions, "used": len(texts), "ids": [i["id"] for i in items]}
    return {side: a for side, (a, _) in outputs.items()}


def _pairwise_scores(cfg: EvaluateConfig, judge, items: list[dict], answers: dict[str, list[str]],
                     baseline: str | None) -> tuple[dict, list[dict]]:
    """Verdicts and ratings → win-rate and dimension metrics and the per-sample rows."""
    from amopo.evaluate import dimension_scores, pairwise
    from amopo.evaluate.lc_winrate import length_controlled_win_rate
    from amopo.evaluate.winrate import win_rate

    texts = [item["instruction"] for item in items]
    lengths = {side: [len(a) for a in answers[side]] for side in answers}
    metrics: dict[str, float] = {f"length/{side}_avg": sum(v) / len(v) for side, v in lengths.items()}
    metrics["winrate/instructions"] = float(len(texts))

    records = [{} for _ in texts]
    if baseline:
        records = pairwise.judge_both_orders(judge, texts, answers["model"], answers["baseline"])
        prefs = [r["preference"] for r in records]
        metrics.update({f"winrate/{k}": v for k, v in win_rate(prefs).items()})
        difficulty = [i["difficulty"] for i in items] if all("difficulty" in i for i in items) else None
        lc = length_controlled_win_rate(prefs, lengths["model"], lengths["baseline"], difficulty=difficulty,
                                        bootstrap=cfg.lc_bootstrap, seed=cfg.seed)
        metrics.update({"winrate/lc": lc["lc"], "winrate/lc_se": lc["lc_se"],
                        "winrate/lc_length_coef": lc["length_coef"]})
        position = pairwise.position_stats(records)
        metrics["judge/unparseable_pairwise"] = position["unparseable"]
        metrics["judge/first_position_rate"] = position["first_position_rate"]
    ratings = {}
    if cfg.dimensions:
        ratings = dimension_scores.rate_answers(judge, texts, answers, cfg.dimensions)
        metrics.update(dimension_scores.summarize(ratings, cfg.dimensions))
    return metrics, _sample_rows(items, answers, records, ratings, cfg.dimensions)


def _sample_rows(items: list[dict], answers: dict[str, list[str]], records: list[dict], ratings: dict,
                 dimensions: list[str]) -> list[dict]:
    """The per-sample table: instruction, both answers and their lengths, verdicts, scores."""
    rows = []
    for k, item in enumerate(items):
        row = {"id": item["id"], "instruction": item["instruction"]}
        for side in ("model", "baseline"):
            row[f"{side}_output"] = answers[side][k] if side in answers else None
            row[f"{side}_length"] = len(answers[side][k]) if side in answers else None
        row.update(records[k])
        for dim in dimensions:
            for side in answers:
                row[f"score/{dim}/{side}"] = ratings[side][dim][k].value
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Steerability (models with a conditioning spec)

_STEER_PREFIX = {"model": "steer", "baseline": "steer_base"}


@dataclass
class _Steering:
    spec: dict
    dims: list            # dimensions steered (held-out steering accuracy)
    rated: list           # of those, the ones the judge has a rubric for (judged steerability)
    skipped: list[str]    # scored dimensions left out of the judged part (no rubric)


def _steer_setup(cfg: EvaluateConfig, spec: dict | None, prompts) -> _Steering | None:
    """What to steer, checked before any work; None when steering is off or the model has no spec."""
    from amopo.evaluate import steerability

    if spec is None:
        if cfg.steer and (cfg.steer_dimensions or is_endpoint(cfg.model)):
            print("evaluate: the model has no conditioning spec (amopo_conditioning.json; --steer-spec for an "
                  "endpoint): steerability is skipped")
        return None
    dims = steerability.spec_dimensions(spec, cfg.steer_dimensions)
    if not dims:
        why = ("was not trained to steer (its train split showed no dimension both ways, as "
               "`amopo prepare --steer-both-orientations` does); --steer-dimensions measures it anyway"
               if spec.get("steer_trained") is not None else "has no scored dimension in its conditioning spec")
        print(f"evaluate: the model {why}: steerability is skipped")
        return None
    rated, skipped = steerability.judged_dimensions(dims, prompts, requested=bool(cfg.steer_dimensions))
    return _Steering(spec, dims, rated, skipped)


def _steer_answers(cfg: EvaluateConfig, steering: _Steering, items: list[dict], baseline: str | None,
                   report: dict) -> dict:
    """The model's and the base model's answers to every steered prompt, both after the system turn
    of the model's prompt style when it has one."""
    from amopo.data.prompts import steering_system
    from amopo.evaluate import generate, steerability

    chosen = generate.select_evenly(items, cfg.steer_num_instructions)
    texts = [item["instruction"] for item in chosen]
    prompts = steerability.steer_prompts(steering.spec, steering.rated, texts)
    asked = [p.text for p in prompts]
    system = steering_system(steering.spec)
    answers = {"model": _answers(cfg.model, cfg.model_name, asked, cfg, "steering, model", system)[0]}
    if baseline and not _is_outputs_file(baseline):
        answers["baseline"] = _answers(baseline, cfg.baseline_name, asked, cfg, "steering, base", system)[0]
    report["steer"] = {"dimensions": [d.name for d in steering.rated],
                       "levels": {d.name: steerability.levels(d) for d in steering.rated},
                       "skipped_no_rubric": steering.skipped, "instructions": [i["id"] for i in chosen],
                       "base": baseline if "baseline" in answers else None,
                       "judge_sees": "the plain instruction and the answer (never the requested level)"}
    return {"ids": [i["id"] for i in chosen], "texts": texts, "prompts": prompts, "answers": answers}


def _steer_scores(cfg: EvaluateConfig, judge, steering: _Steering, asked: dict) -> tuple[dict, list[dict]]:
    """The judge's ratings of the steered answers → ``steer/`` and ``steer_base/`` metrics and rows
    (with ``steer_side_effects``, the side-effect ratings too: ``side_ratings`` of a row)."""
    from amopo.evaluate import steerability

    metrics, rows = {}, []
    side_items = (steerability.side_effect_items(asked["prompts"], steering.rated)
                  if cfg.steer_side_effects and len(steering.rated) > 1 else [])
    for side, answers in asked["answers"].items():
        prefix = _STEER_PREFIX[side]
        verdicts = steerability.rate(judge, asked["prompts"], asked["texts"], answers,
                                     desc=f"rating steered answers ({side})")
        values = [v.value for v in verdicts]
        metrics.update(steerability.summarize(asked["prompts"], values, steering.rated, prefix=prefix,
                                              resamples=cfg.steer_bootstrap, seed=cfg.seed))
        part = steerability.sample_rows(side, asked["prompts"], asked["ids"], asked["texts"], answers, values)
        if side_items:
            others = [v.value for v in steerability.rate_side_effects(
                judge, side_items, asked["prompts"], asked["texts"], answers, desc=f"rating side effects ({side})")]
            metrics.update(steerability.side_effects(side_items, others, steering.rated, prefix=prefix))
            metrics[f"{prefix}/unparseable"] += float(sum(v is None for v in others))
            for it, value in zip(side_items, others):
                part[it.index].setdefault("side_ratings", {})[it.other] = value
        rows += part
    return metrics, rows


def _steer_lengths(cfg: EvaluateConfig, steering: _Steering, asked: dict) -> tuple[dict, dict, dict]:
    """Length steerability of the length dimensions steered (``amopo.evaluate.steer_length``), in
    tokens of the model's tokenizer (an endpoint's ``--model-tokenizer``; without one, skipped):
    metrics, {side: tokens per steered answer}, {dimension: the data's level-to-length table}."""
    from amopo.evaluate import steer_length, steerability

    names = [d.name for d in steering.rated if d.name in steer_length.LENGTH_DIMENSIONS]
    source = cfg.model_tokenizer if is_endpoint(cfg.model) else cfg.model
    if not names:
        return {}, {}, {}
    if not source:
        print("evaluate: no tokenizer for the endpoint model (--model-tokenizer): verbosity by length is skipped")
        return {}, {}, {}
    from amopo.models import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model(source))
    tables = {}
    if cfg.data:
        for name in names:
            responses = steer_length.data_responses(cfg.data, name)
            tables[name] = steer_length.length_table(
                steer_length.token_lengths(tokenizer, [t for t, _ in responses]), [s for _, s in responses])
    metrics, tokens = {}, {}
    dims = {d.name: d for d in steering.rated}
    for side, answers in asked["answers"].items():
        tokens[side] = steer_length.token_lengths(tokenizer, answers)
        for name in names:
            groups: dict[int, list] = {}
            for p, n in zip(asked["prompts"], tokens[side]):
                if p.dimension == name:
                    groups.setdefault(p.index, []).append((p.level, float(n)))
            part = steer_length.length_summary(list(groups.values()), steerability.levels(dims[name]),
                                               tables.get(name), resamples=cfg.steer_bootstrap, seed=cfg.seed)
            metrics.update({f"{_STEER_PREFIX[side]}/{name}/{k}": v for k, v in part.items()})
    return metrics, tokens, tables


def _steer_accuracy(cfg: EvaluateConfig, steering: _Steering, baseline: str | None) -> dict:
    """Held-out steering accuracy of the model and, when it is a local model, the base model."""
    from amopo.evaluate.steer_accuracy import heldout_steering_accuracy

    sides = {"model": cfg.model}
    if baseline and not is_endpoint(baseline) and not _is_outputs_file(baseline):
        sides["baseline"] = baseline
    metrics = {}
    for side, model in sides.items():
        metrics.update(heldout_steering_accuracy(model, cfg.data, steering.spec, steering.dims,
                                                 prefix=_STEER_PREFIX[side], max_length=cfg.max_length,
                                                 max_pairs=cfg.heldout_max_pairs, progress=cfg.progress))
    return metrics


# ---------------------------------------------------------------------------------------------
# Output folder


def _check_local_models(specs: list[str | None]) -> None:
    """Fail before any work on a model folder or hub id that does not resolve (endpoints and
    outputs files are checked when first used)."""
    from amopo.models import resolve_model

    for spec in specs:
        if spec and not is_endpoint(spec) and not spec.endswith((".jsonl", ".json")):
            resolve_model(spec)


def _check_output(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise ConfigError(f"{out}: exists and is not an earlier evaluation output (no {MARKER}); "
                          "choose another --output")


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished folder into place, replacing an earlier evaluation."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


_UNPARSEABLE = ("judge/unparseable_pairwise", "judge/unparseable_ratings", "steer/unparseable",
                "steer_base/unparseable")


def _judged(cfg: EvaluateConfig, prompts, steering: _Steering | None, baseline: str | None, folder: Path,
            report: dict) -> tuple[dict, list[dict], list[dict]]:
    """Every answer first (one generator loaded at a time), then one judge for every verdict:
    metrics, the win-rate sample rows and the steering sample rows."""
    items = _instruction_items(cfg)
    answers = _pairwise_answers(cfg, items, baseline, folder, report) if cfg.pairwise else None
    asked = _steer_answers(cfg, steering, items, baseline, report) if steering and steering.rated else None
    judge = _judge(cfg, prompts)
    report["judge"] = {**judge.identity, **prompts.identity}
    metrics, rows, steer_rows = {}, [], []
    tokens: dict = {}
    if asked is not None:
        metrics, tokens, tables = _steer_lengths(cfg, steering, asked)
        report["steer"]["length_tables"] = {k: [list(row) for row in t] for k, t in tables.items()}
    try:
        if answers is not None:
            part, rows = _pairwise_scores(cfg, judge, items, answers, baseline)
            metrics.update(part)
        if asked is not None:
            part, steer_rows = _steer_scores(cfg, judge, steering, asked)
            metrics.update(part)
            order = [(side, k) for side in asked["answers"] for k in range(len(asked["prompts"]))]
            for row, (side, k) in zip(steer_rows, order, strict=True):
                row["tokens"] = tokens[side][k] if side in tokens else None
    finally:
        judge.close()
    metrics["judge/unparseable"] = sum(metrics.get(k, 0.0) for k in _UNPARSEABLE)
    return metrics, rows, steer_rows


def _figures(folder: Path, metrics: dict, dims: list[str], training, steering: _Steering | None,
             tables: dict) -> list[Path]:
    from amopo.evaluate import plots, steerability

    made = []
    if any(f"dimension/{d}/model" in metrics for d in dims):
        made.append(plots.plot_dimension_radar(
            dims, [metrics.get(f"dimension/{d}/model", math.nan) for d in dims],
            [metrics.get(f"dimension/{d}/baseline", math.nan) for d in dims]
            if f"dimension/{dims[0]}/baseline" in metrics else None, folder / "dimension_radar.png"))
    if "winrate/raw" in metrics:
        made.append(plots.plot_win_rates(metrics, folder / "win_rates.png"))
    if training is not None and training.history is not None:
        made.append(plots.plot_training_curves(training.history, folder / "training_curves.png"))
    if steering is not None and steering.rated:
        made.append(plots.plot_steering(steerability.curves(metrics, steering.rated, "steer"),
                                        steerability.curves(metrics, steering.rated, "steer_base"),
                                        folder / "steerability.png"))
        from amopo.evaluate import steer_length

        names = [d.name for d in steering.rated if d.name in steer_length.LENGTH_DIMENSIONS]
        levels = {d.name: steerability.levels(d) for d in steering.rated}
        made.append(plots.plot_steer_length(
            {side: steer_length.length_curves(metrics, names, levels, prefix) for side, prefix in
             (("trained", "steer"), ("base", "steer_base"))},
            {side: steerability.curves(metrics, [d for d in steering.rated if d.name in names], prefix)
             for side, prefix in (("trained", "steer"), ("base", "steer_base"))},
            tables, folder / "steer_length.png"))
    return [p for p in made if p is not None]


def _headline(metrics: dict) -> str:
    keys = ["winrate/raw", "winrate/lc", "dimension/mean_delta", "pref_accuracy/plain", "pref_accuracy/mean_dimensions",
            "steer/mean_spearman", "steer/accuracy", "steer/verbosity/length_spearman",
            "steer/verbosity/miscalibration", "judge/unparseable"]
    keys += sorted(k for k in metrics if k.startswith("lm_eval/") and "stderr" not in k)
    return ", ".join(f"{k}={metrics[k]:.3f}" for k in keys if k in metrics)


def evaluate(cfg: EvaluateConfig) -> dict:
    """Run the configured evaluation; returns the summary (metrics and where everything went)."""
    from amopo.evaluate.judge_prompts import load_prompt_set
    from amopo.evaluate.report import finite_metrics, log_to_mlflow, write_json, write_samples
    from amopo.evaluate.steerability import find_spec
    from amopo.evaluate.training_run import find_training_run

    if not cfg.model:
        raise ConfigError("evaluate: --model is required (a model folder, hub id or endpoint URL)")
    if cfg.data and is_endpoint(cfg.model):
        raise ConfigError("evaluate: --data (held-out preference accuracy) needs the model's log-probabilities; "
                          "give a model folder, not an endpoint")
    spec = find_spec(cfg.model, cfg.steer_spec) if cfg.steer else None
    prompts = load_prompt_set(cfg.judge_prompts) if cfg.pairwise or spec is not None else None
    for dim in cfg.dimensions if cfg.pairwise else []:
        prompts.rubric(dim)  # an unknown dimension fails here, before any generation
    steering = _steer_setup(cfg, spec, prompts)
    judged = cfg.pairwise or bool(steering and steering.rated)
    if not (judged or cfg.data or cfg.lm_eval_tasks):
        raise ConfigError("evaluate: nothing to do (pairwise off, no --data, no --tasks)")
    out = Path(cfg.output)
    _check_output(out)
    training = None if is_endpoint(cfg.model) else find_training_run(cfg.model)
    baseline = cfg.baseline or (training.base_model if training else None)
    _check_local_models([cfg.model] + ([baseline, cfg.judge] if judged else [])
                        + ([baseline] if steering and cfg.data else [])
                        + ([cfg.model_tokenizer] if cfg.lm_eval_tasks and cfg.model_tokenizer else []))
    if cfg.pairwise and not baseline:
        print("evaluate: no baseline (none given, no training run beside the model): win rates are skipped; "
              "dimension scores are reported for the model alone")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        metrics: dict[str, float] = {}
        report: dict = {"model": cfg.model, "baseline": baseline,
                        "training_run": training.__dict__ if training else None}
        rows: list[dict] = []
        steer_rows: list[dict] = []
        if judged:
            part, rows, steer_rows = _judged(cfg, prompts, steering, baseline, tmp, report)
            metrics.update(part)
        if cfg.data:
            from amopo.evaluate.heldout import heldout_preference_accuracy, reuse_training_heldout

            reused = training and reuse_training_heldout(training.folder, cfg.data, max_length=cfg.max_length,
                                                         max_pairs=cfg.heldout_max_pairs)
            if reused:
                print("evaluate: held-out preference accuracy taken from the training run (same model, eval split "
                      "and settings)", flush=True)
            metrics.update(reused or heldout_preference_accuracy(cfg.model, cfg.data, max_length=cfg.max_length,
                                                                 max_pairs=cfg.heldout_max_pairs, progress=cfg.progress))
        if steering is not None and cfg.data:
            metrics.update(_steer_accuracy(cfg, steering, baseline))
        if cfg.lm_eval_tasks:
            from amopo.evaluate.lm_eval_tasks import run_lm_eval

            endpoint = None
            if is_endpoint(cfg.model):
                endpoint = ChatEndpoint(cfg.model, cfg.model_name, api_key_env=cfg.api_key_env,
                                        retries=cfg.retries, timeout=cfg.timeout)
            part, report["lm_eval"] = run_lm_eval(cfg.model, cfg.lm_eval_tasks, limit=cfg.lm_eval_limit,
                                                  batch_size=cfg.batch_size, chat_template=cfg.lm_eval_chat_template,
                                                  endpoint=endpoint, seed=cfg.seed, tokenizer=cfg.model_tokenizer)
            metrics.update(part)

        kept, missing = finite_metrics(metrics)
        report["missing"] = missing
        write_json(tmp / "metrics.json", kept)
        write_json(tmp / "report.json", report)
        (tmp / MARKER).write_text(config_lib.dump_yaml(cfg), encoding="utf-8")
        if rows:
            write_samples(tmp, rows)
        if steer_rows:
            write_samples(tmp, steer_rows, name="steer_samples")
        tables = {k: [tuple(r) for r in t] for k, t in report.get("steer", {}).get("length_tables", {}).items()}
        figures = _figures(tmp, kept, cfg.dimensions, training, steering, tables)
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    summary = {**kept, "output_dir": str(out), "metrics_path": str(out / "metrics.json"),
               "samples_path": str(out / "samples.jsonl") if rows else None,
               "steer_samples_path": str(out / "steer_samples.jsonl") if steer_rows else None,
               "figures": [str(out / f.name) for f in figures], "missing": missing}
    print(f"evaluation: {_headline(kept)}")
    if cfg.mlflow:
        run_id = cfg.mlflow_run_id or (training.run_id if training and not cfg.new_mlflow_run else None)
        uri = cfg.mlflow_tracking_uri or (training.tracking_uri if training else None)
        link = {"amopo.model": cfg.model, "amopo.baseline": baseline or "", "amopo.judge": cfg.judge}
        if training and training.run_id and run_id != training.run_id:
            link["amopo.train_run_id"] = training.run_id
        summary["mlflow_run_id"], summary["mlflow_tracking_uri"] = log_to_mlflow(
            out, kept, config_lib.to_dict(cfg), tracking_uri=uri, experiment=cfg.mlflow_experiment,
            run_name=cfg.run_name or "evaluate", run_id=run_id, link_tags=link)
    return summary
