"""Head-to-head win rates between objectives, judged in both orders by one judge.

For objectives a and b, on the instructions both answered (matched by text between their
evaluations' ``outputs/model.jsonl``), the judge compares a's answer with b's in both orders exactly
as an evaluation compares a model with its base (``amopo.evaluate.pairwise``), giving per instruction
p_i = P(a's answer better), the mean of the two orders, and (``amopo.evaluate.winrate``)

    h2h/<a>/<b>/winrate    = (1/n) Σ_i p_i            b's win rate against a is 1 − that
    h2h/<a>/<b>/winrate_se = sd(p) / √n               (ddof = 1)
    within noise           ⇔  |winrate − 1/2| < 2 · winrate_se

The judge and its settings are those the evaluations used (their ``eval_config.yaml``) unless the
comparison names another; evaluations judged by different judges get no head-to-head unless one is
named. Pairs whose outputs are missing, or share no instruction, are skipped with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import math
from itertools import combinations
from pathlib import Path
from typing import Sequence

from amopo import config as config_lib
from amopo.compare.entries import Entry, read_jsonl
from amopo.errors import ConfigError

# The evaluation settings that make up "the judge".
JUDGE_FIELDS = ("judge", "judge_model_name", "judge_api_key_env", "judge_prompts", "judge_top_k", "judge_max_tokens",
                "judge_batch_size", "max_answer_chars", "concurrency", "retries", "timeout")


def judge_config(entries: Sequence[Entry], overrides: dict):
    """(EvaluateConfig holding the judge settings, None) or (None, why there is no single judge)."""
    from amopo.evaluate.evaluate import EvaluateConfig

    used = {json.dumps({k: e.eval_config.get(k) for k in ("judge", "judge_model_name", "judge_prompts")})
            for e in entries if e.eval_config}
    named = {k: v for k, v in overrides.items() if v not in (None, "")}
    if len(used) > 1 and "judge" not in named:
        return None, "the evaluations were judged by different judges or prompt sets; name one with --judge"
    base = next((e.eval_config for e in entries if e.eval_config), {})
    data = {k: base[k] for k in JUDGE_FIELDS if base.get(k) is not None}
    data.update(named)
    return config_lib.from_dict(EvaluateConfig, data, "head-to-head judge"), None


def read_answers(path: Path) -> dict[str, str]:
    """instruction → output of an AlpacaEval-style outputs file."""
    answers: dict[str, str] = {}
    for number, record in enumerate(read_jsonl(path), 1):
        if not isinstance(record.get("instruction"), str) or not isinstance(record.get("output"), str):
            raise ConfigError(f"compare: {path}: record {number}: expected string 'instruction' and 'output'")
        answers[record["instruction"]] = record["output"]
    return answers


def _pair_metrics(a: str, b: str, records: list[dict]) -> dict:
    from amopo.evaluate.pairwise import position_stats
    from amopo.evaluate.winrate import win_rate

    rate = win_rate([r["preference"] for r in records])
    prefix = f"h2h/{a}/{b}"
    out = {f"{prefix}/winrate": rate["raw"], f"{prefix}/winrate_se": rate["raw_se"], f"{prefix}/n": rate["n"],
           f"{prefix}/wins": rate["wins"], f"{prefix}/losses": rate["losses"], f"{prefix}/ties": rate["ties"]}
    position = position_stats(records)
    out[f"{prefix}/unparseable"] = position["unparseable"]
    out[f"{prefix}/first_position_rate"] = position["first_position_rate"]
    se = rate["raw_se"]
    out[f"{prefix}/within_noise"] = abs(rate["raw"] - 0.5) < 2 * se if math.isfinite(se) else None
    return out


def _side_names(key: str) -> str:
    """The pairwise record's model/baseline sides are a/b here."""
    return key.replace("model_first", "a_first").replace("baseline_first", "b_first")


def head_to_head(entries: Sequence[Entry], overrides: dict, *, max_instructions: int = 0,
                 progress: bool = True) -> tuple[dict, list[dict], dict[str, str]]:
    """(flat ``h2h/…`` metrics, one row per judged instruction and pair, skipped → reason)."""
    from amopo.evaluate.evaluate import _judge
    from amopo.evaluate.generate import select_evenly
    from amopo.evaluate.judge_prompts import load_prompt_set
    from amopo.evaluate.pairwise import judge_both_orders

    skipped: dict[str, str] = {}
    answers = {}
    for e in entries:
        if e.outputs.is_file():
            answers[e.label] = read_answers(e.outputs)
        else:
            skipped[e.label] = f"no outputs/model.jsonl in {e.eval_dir} (the evaluation ran without pairwise answers)"
    work = []
    for a, b in combinations([e.label for e in entries if e.label in answers], 2):
        common = select_evenly([t for t in answers[a] if t in answers[b]], max_instructions)
        if common:
            work.append((a, b, common))
        else:
            skipped[f"{a} vs {b}"] = "their evaluations answered no instruction in common"
    if not work:
        return {}, [], skipped or {"all": "fewer than two objectives have answers"}
    cfg, why = judge_config(entries, overrides)
    if cfg is None:
        return {}, [], {"all": why}
    cfg = dataclasses.replace(cfg, progress=progress)
    judge = _judge(cfg, load_prompt_set(cfg.judge_prompts))
    metrics, rows = {"h2h/judge": cfg.judge, "h2h/judge_prompts": cfg.judge_prompts}, []
    try:
        for a, b, texts in work:
            records = judge_both_orders(judge, texts, [answers[a][t] for t in texts], [answers[b][t] for t in texts])
            metrics.update(_pair_metrics(a, b, records))
            rows += [{"a": a, "b": b, "instruction": t, "a_output": answers[a][t], "b_output": answers[b][t],
                      **{_side_names(k): v for k, v in r.items()}} for t, r in zip(texts, records)]
    finally:
        judge.close()
    return metrics, rows, skipped
