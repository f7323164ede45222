"""Held-out preference accuracy, measured by the trainer before and after training and by
``amopo evaluate`` (:mod:`amopo.evaluate.heldout`).

For each pair and each prompt variant v (the plain prompt, and each dimension-conditioned prompt
x*_k), the model ranks the pair correctly when ā(y_w | v) > ā(y_l | v), with ā the mean response-token
log-probability. Reported: accuracy and mean margin ā_w − ā_l per variant, and their mean over the
conditioned variants.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import torch

from amopo.objectives import average_logprob
from amopo.train.batching import even_shard, pad_sequences
from amopo.train.step import sequence_stats


def _variants(row: dict) -> list[list[int]]:
    return [row["plain_prompt_ids"], *row["prompt_ids"]]


@torch.no_grad()
def preference_accuracy(model, rows: Sequence[dict], dimensions: Sequence[str], *, pad_id: int, device,
                        batch_size: int = 4, accelerator=None, progress: bool = False) -> dict[str, float]:
    """Accuracy and margin per prompt variant. With ``accelerator`` the rows are split across
    processes and the counts summed; every process runs the same number of forward passes (a
    sharded model's forward is a collective), its surplus passes on repeated rows that are not counted."""
    names = ["plain", *dimensions]
    v = len(names)
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    mine, counted = even_shard(list(rows), rank, world)
    correct = torch.zeros(v, device=device)
    margin = torch.zeros(v, device=device)
    count = torch.zeros(1, device=device)
    was_training = model.training
    model.eval()
    starts = range(0, len(mine), batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc="held-out preference accuracy", unit="batch", leave=False)
    for start in starts:
        chunk = mine[start:start + batch_size]
        seqs = [(p, r["chosen_ids"]) for r in chunk for p in _variants(r)]
        seqs += [(p, r["rejected_ids"]) for r in chunk for p in _variants(r)]
        batch = {k: t.to(device) for k, t in pad_sequences(seqs, pad_id).items()}
        avg = average_logprob(sequence_stats(model, batch)).float()
        n = len(chunk)
        keep = torch.tensor([start + i < counted for i in range(n)], device=device)
        diff = (avg[: n * v] - avg[n * v:]).view(n, v)[keep]
        correct += (diff > 0).float().sum(0)
        margin += diff.sum(0)
        count += diff.shape[0]
    if was_training:
        model.train()
    if accelerator is not None and world > 1:
        correct, margin, count = (accelerator.reduce(t, reduction="sum") for t in (correct, margin, count))
    total = max(count.item(), 1.0)
    out = {}
    for i, name in enumerate(names):
        out[f"accuracy/{name}"] = correct[i].item() / total
        out[f"margin/{name}"] = margin[i].item() / total
    if dimensions:
        out["accuracy/mean_dimensions"] = sum(out[f"accuracy/{d}"] for d in dimensions) / len(dimensions)
    out["pairs"] = count.item()
    return out


def heldout_fingerprint(data: str | Path, *, max_length: int, max_pairs: int, accumulate_prefixes: bool) -> dict:
    """What decides a held-out measurement besides the model: the eval split's bytes, the prompt
    style of the prepared data and the settings."""
    from amopo.data.tokenize import manifest_prompt_style, read_manifest

    raw = Path(data, "eval.jsonl").read_bytes()
    pairs = sum(1 for line in raw.splitlines() if line.strip())
    return {"eval_sha256": hashlib.sha256(raw).hexdigest(), "max_length": int(max_length),
            "pairs": min(max_pairs or pairs, pairs), "accumulate_prefixes": bool(accumulate_prefixes),
            "prompt_style": manifest_prompt_style(read_manifest(data)).name}
