"""Held-out preference accuracy of a model on a prepared data folder's eval split.

Wraps ``amopo.evaluate.preference.preference_accuracy`` (ā = mean response-token log-prob; a pair
is ranked correctly when ā(y_w | v) > ā(y_l | v)) and names its results for the evaluation report:

    pref_accuracy/plain             the unconditioned prompt
    pref_accuracy/<dimension>       the prompt conditioned on that dimension
    pref_accuracy/mean_dimensions   their mean over the dimensions (= plain when there are none)
    pref_margin/<variant>           mean ā_w − ā_l
"""

from __future__ import annotations

from amopo.errors import DataError


def heldout_preference_accuracy(model: str, data: str, *, max_length: int = 1024, max_pairs: int = 0,
                                batch_size: int = 4, progress: bool = True) -> dict[str, float]:
    import torch

    from amopo.data.tokenize import load_tokenized
    from amopo.evaluate.preference import preference_accuracy
    from amopo.models import load_model, load_tokenizer

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
    out = {}
    for key, value in res.items():
        kind, _, variant = key.partition("/")
        if kind == "accuracy":
            out[f"pref_accuracy/{variant}"] = value
        elif kind == "margin":
            out[f"pref_margin/{variant}"] = value
    out.setdefault("pref_accuracy/mean_dimensions", out["pref_accuracy/plain"])
    out["pref_accuracy/pairs"] = float(res["pairs"])
    return out
