"""Held-out preference accuracy of a model on a prepared data folder's eval split.

Wraps ``amopo.train.heldout.preference_accuracy`` (ā = mean response-token log-prob; a pair
is ranked correctly when ā(y_w | v) > ā(y_l | v)) and names its results for the evaluation report:

    pref_accuracy/plain             the unconditioned prompt
    pref_accuracy/<dimension>       the prompt conditioned on that dimension
    pref_accuracy/mean_dimensions   their mean over the dimensions (= plain when there are none)
    pref_accuracy_se/<variant>      standard error of an accuracy a over n pairs, √(a(1 − a)/n)
    pref_margin/<variant>           mean ā_w − ā_l
"""

from __future__ import annotations

import json
from pathlib import Path

from amopo.errors import DataError
from amopo.train.heldout import heldout_fingerprint


def heldout_preference_accuracy(model: str, data: str, *, max_length: int = 1024, max_pairs: int = 0,
                                batch_size: int = 4, progress: bool = True) -> dict[str, float]:
    import torch

    from amopo.data.tokenize import load_tokenized
    from amopo.models import load_model, load_tokenizer
    from amopo.train.heldout import preference_accuracy

    tokenizer = load_tokenizer(model)
    split = load_tokenized(data, tokenizer, "eval", max_length=max_length, show_progress=progress)
    rows = split.rows[: max_pairs or None] if max_pairs else split.rows
    if len(rows) == 0:
        raise DataError("the eval split has no pairs; held-out preference accuracy needs some",
                        file=f"{data}/eval.jsonl")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = load_model(model).to(device)
    res = preference_accuracy(net, rows, split.dimensions, pad_id=tokenizer.pad_token_id, device=device,
                              batch_size=batch_size, progress=progress)
    return report_names(res)


def report_names(res: dict[str, float], prefix: str = "pref") -> dict[str, float]:
    """``accuracy/<v>`` → ``{prefix}_accuracy/<v>``, ``margin/<v>`` → ``{prefix}_margin/<v>``, pairs kept."""
    out = {}
    for key, value in res.items():
        kind, _, variant = key.partition("/")
        if kind in ("accuracy", "margin"):
            out[f"{prefix}_{kind}/{variant}"] = value
    out.setdefault(f"{prefix}_accuracy/mean_dimensions", out[f"{prefix}_accuracy/plain"])
    pairs = float(res["pairs"])
    for key in [k for k in out if k.startswith(f"{prefix}_accuracy/") and k != f"{prefix}_accuracy/mean_dimensions"]:
        accuracy = out[key]
        out[key.replace("_accuracy/", "_accuracy_se/", 1)] = (accuracy * (1 - accuracy) / pairs) ** 0.5 if pairs else 0.0
    out[f"{prefix}_accuracy/pairs"] = pairs
    return out


def reuse_training_heldout(training_folder: str | Path, data: str | Path, *, max_length: int,
                           max_pairs: int) -> dict[str, float] | None:
    """The training run's own held-out measurement of its final model, when it was taken on the same
    eval split with the same settings as asked here; else None (the caller measures).

    Adds the base model's accuracy as ``pref_base_accuracy/*`` when the run measured it too.
    """
    metrics_file = Path(training_folder, "metrics.json")
    try:
        trained = json.loads(metrics_file.read_text(encoding="utf-8"))
        wanted = heldout_fingerprint(data, max_length=max_length, max_pairs=max_pairs, accumulate_prefixes=False)
    except (OSError, ValueError):
        return None
    if trained.get("heldout_fingerprint") != wanted or "heldout_final" not in trained:
        return None
    out = report_names(trained["heldout_final"])
    if "heldout_base" in trained:
        out.update(report_names(trained["heldout_base"], prefix="pref_base"))
    return out
