"""Steering accuracy on held-out pairs: does the model's preference follow a requested level?

For every pair of a prepared folder's eval split and every steered dimension k on which its two
responses are scored differently, h is the response scored higher on k and l the other. The model
ranks them by ā (mean response-token log-prob, ``sequence_stats`` + ``average_logprob`` as held-out
preference accuracy in ``amopo.train.heldout`` does) under two user turns built by
``steered_user_text`` (after the system turn of the model's prompt style, if it has one, as in
training): the high end of k's scale requested, then the low end. The pair follows the
request when

    ā(h | high) > ā(l | high)   and   ā(l | low) > ā(h | low)

Metrics (``steer/`` for the model, ``steer_base/`` for the base model on the same prompts)::

    steer/<k>/accuracy, …/accuracy_se   share of k's pairs that follow, binomial standard error
    steer/<k>/accuracy_pairs            pairs whose responses differ on k
    steer/<k>/shift                     mean of [ā(h|high) − ā(l|high)] − [ā(h|low) − ā(l|low)]:
                                        how far the request moves the preference toward h
    steer/accuracy, …_se, …_pairs       the same pooled over every (pair, dimension)

A model that ignores the request scores 0 (it prefers the same response under both requests).
Responses are cut from their end when prompt + response exceed ``max_length``; a pair where not one
response token fits is left out.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Sequence

import torch

from amopo.data.dimensions import Dimension, registry
from amopo.data.prompts import render_prompt, render_response, steered_user_text, steering_system
from amopo.data.readers import read_amopo
from amopo.data.records import PreferencePair
from amopo.data.tokenize import read_manifest
from amopo.errors import DataError
from amopo.evaluate.steer_stats import binomial_rate
from amopo.objectives import average_logprob
from amopo.train.batching import pad_sequences
from amopo.train.step import sequence_stats


def eval_pairs(data: str | Path, max_pairs: int = 0) -> list[PreferencePair]:
    """The first ``max_pairs`` (0: all) pairs of a prepared folder's eval split."""
    manifest = read_manifest(data)
    split = Path(data) / "eval.jsonl"
    if not split.is_file():
        raise DataError("split file 'eval.jsonl' is missing", file=str(data))
    if manifest.get("counts", {}).get("eval") == 0:
        return []
    dims = [Dimension.from_json(d) for d in manifest["dimensions"]]
    known = {**registry(manifest.get("source", {}).get("format", "amopo")), **{d.name: d for d in dims}}
    pairs = read_amopo(split, known=known, max_chars=sys.maxsize).pairs
    return pairs[:max_pairs] if max_pairs else pairs


def ordered(pair: PreferencePair, dim: str) -> tuple[str, str] | None:
    """(higher-scored response, lower-scored response) on ``dim``; None when either score is missing
    or they are equal."""
    c, r = pair.score("chosen", dim), pair.score("rejected", dim)
    if math.isnan(c) or math.isnan(r) or c == r:
        return None
    return (pair.chosen.text, pair.rejected.text) if c > r else (pair.rejected.text, pair.chosen.text)


def follows(margin_high: torch.Tensor, margin_low: torch.Tensor) -> torch.Tensor:
    """Whether each pair follows the request, from m = ā(h | v) − ā(l | v) under each request."""
    return (margin_high > 0) & (margin_low < 0)


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def pair_sequences(tokenizer, spec: dict, pair: PreferencePair, dim: Dimension, *,
                   max_length: int) -> list[tuple[list[int], list[int]]] | None:
    """(prompt, response) ids in the order (high, h), (high, l), (low, h), (low, l); None when the
    pair does not differ on ``dim`` or nothing of its responses fits ``max_length``."""
    responses = ordered(pair, dim.name)
    if responses is None:
        return None
    system = steering_system(spec)     # the prompt style's system turn, as in training
    prompts = [_ids(tokenizer, render_prompt(tokenizer, steered_user_text(spec, {dim.name: level}, pair.prompt),
                                             system))
               for level in (float(dim.high), float(dim.low))]
    budget = max_length - max(len(p) for p in prompts)
    if budget < 1:
        return None
    answers = [_ids(tokenizer, render_response(tokenizer, pair.prompt, text, system))[:budget] for text in responses]
    return [(p, a) for p in prompts for a in answers]


def summarize(outcomes: dict[str, list[tuple[bool, float]]], prefix: str = "steer") -> dict[str, float]:
    """Flat metrics from {dimension: [(followed, shift) per pair]} (see the module docstring)."""
    out: dict[str, float] = {}
    pooled = 0
    for name, rows in outcomes.items():
        hits = sum(ok for ok, _ in rows)
        pooled += hits
        out[f"{prefix}/{name}/accuracy"], out[f"{prefix}/{name}/accuracy_se"] = binomial_rate(hits, len(rows))
        out[f"{prefix}/{name}/accuracy_pairs"] = float(len(rows))
        out[f"{prefix}/{name}/shift"] = sum(s for _, s in rows) / len(rows) if rows else math.nan
    n = sum(len(rows) for rows in outcomes.values())
    out[f"{prefix}/accuracy"], out[f"{prefix}/accuracy_se"] = binomial_rate(pooled, n)
    out[f"{prefix}/accuracy_pairs"] = float(n)
    return out


@torch.no_grad()
def steering_outcomes(model, tokenizer, spec: dict, pairs: Sequence[PreferencePair], dims: Sequence[Dimension], *,
                      max_length: int, device, batch_size: int = 4,
                      progress: bool = False) -> dict[str, list[tuple[bool, float]]]:
    """{dimension: [(followed, shift) per pair that differs on it]}."""
    events = [(dim.name, seqs) for pair in pairs for dim in dims
              if (seqs := pair_sequences(tokenizer, spec, pair, dim, max_length=max_length)) is not None]
    from tqdm.auto import tqdm

    out: dict[str, list[tuple[bool, float]]] = {d.name: [] for d in dims}
    model.eval()
    for start in tqdm(range(0, len(events), batch_size), desc="steering accuracy", unit="batch", leave=False,
                      disable=not progress):
        chunk = events[start:start + batch_size]
        batch = {k: t.to(device) for k, t in pad_sequences([s for _, seqs in chunk for s in seqs],
                                                             tokenizer.pad_token_id).items()}
        avg = average_logprob(sequence_stats(model, batch)).float().view(len(chunk), 4)
        margin_high, margin_low = avg[:, 0] - avg[:, 1], avg[:, 2] - avg[:, 3]
        for (name, _), ok, shift in zip(chunk, follows(margin_high, margin_low).tolist(),
                                        (margin_high - margin_low).tolist()):
            out[name].append((bool(ok), float(shift)))
    return out


def heldout_steering_accuracy(model: str, data: str, spec: dict, dims: Sequence[Dimension], *, prefix: str = "steer",
                              max_length: int = 1024, max_pairs: int = 0, batch_size: int = 4,
                              progress: bool = True) -> dict[str, float]:
    """Steering accuracy of a local model (folder or hub id) on ``data``'s eval split, prompts from ``spec``."""
    from amopo.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(model)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = load_model(model).to(device)
    outcomes = steering_outcomes(net, tokenizer, spec, eval_pairs(data, max_pairs), dims, max_length=max_length,
                                 device=device, batch_size=batch_size, progress=progress)
    del net
    return summarize(outcomes, prefix)
