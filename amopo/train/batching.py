"""Data order and padding.

Order: each epoch is a seeded permutation of the training rows, cut into global batches of
``batch_size × gradient_accumulation_steps × world_size`` pairs (an incomplete last global batch is dropped, so every
optimizer step sees the same number of pairs and the loss scaling stays exact). Process ``r`` takes
micro-batch ``m`` of a global batch at offset ``(m × world_size + r) × batch_size``. A step number
fully determines the position in the data, which is what makes resuming exact.

Padding: one row of the prepared data becomes ``2·K`` sequences (chosen for each of the K prompts,
then rejected for each) for AMoPO, or 2 sequences on the plain prompt for the baselines.
"""

from __future__ import annotations

from typing import Sequence

import torch

IGNORE_INDEX = -100


def steps_per_epoch(num_rows: int, global_batch: int) -> int:
    return num_rows // global_batch


def epoch_order(num_rows: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_rows, generator=g).tolist()


def micro_batches(num_rows: int, step: int, *, seed: int, batch_size: int, gradient_accumulation_steps: int,
                  world_size: int, rank: int) -> tuple[int, list[list[int]]]:
    """(epoch, row indices of this process's micro-batches) for global optimizer ``step``."""
    global_batch = batch_size * gradient_accumulation_steps * world_size
    per_epoch = steps_per_epoch(num_rows, global_batch)
    epoch, offset = divmod(step, per_epoch)
    order = epoch_order(num_rows, seed, epoch)
    start = offset * global_batch
    out = []
    for m in range(gradient_accumulation_steps):
        lo = start + (m * world_size + rank) * batch_size
        out.append(order[lo:lo + batch_size])
    return epoch, out


def even_shard(items: list, rank: int, world: int) -> tuple[list, int]:
    """Process ``rank``'s share ``items[rank::world]``, padded with repeats of ``items[0]`` to
    ⌈len/world⌉ so that every process does the same number of forward passes; and how many of the
    returned items are its own (the rest are repeats not to be counted)."""
    mine = items[rank::world]
    size = -(-len(items) // world) if items else 0
    return mine + [items[0]] * (size - len(mine)), len(mine)


def sequences(row: dict, conditioned: bool) -> tuple[list[tuple[list[int], list[int]]], list[tuple[list[int], list[int]]]]:
    """(chosen, rejected) lists of (prompt_ids, response_ids) for one row."""
    prompts = row["prompt_ids"] if conditioned else [row["plain_prompt_ids"]]
    return ([(p, row["chosen_ids"]) for p in prompts], [(p, row["rejected_ids"]) for p in prompts])


def pad_sequences(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad prompt+response sequences; labels are the response tokens, IGNORE_INDEX elsewhere."""
    length = max(len(p) + len(r) for p, r in pairs)
    n = len(pairs)
    input_ids = torch.full((n, length), pad_id, dtype=torch.long)
    labels = torch.full((n, length), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((n, length), dtype=torch.long)
    for i, (p, r) in enumerate(pairs):
        seq = list(p) + list(r)
        input_ids[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        labels[i, len(p):len(seq)] = torch.tensor(r, dtype=torch.long)
        attention[i, :len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def collate(rows: Sequence[dict], conditioned: bool, pad_id: int) -> dict[str, torch.Tensor]:
    """All sequences of a micro-batch in one padded tensor: the chosen block then the rejected block,
    each ordered example-major, dimension-minor (index ``b·K + k``)."""
    chosen, rejected = [], []
    for row in rows:
        c, r = sequences(row, conditioned)
        chosen += c
        rejected += r
    batch = pad_sequences(chosen + rejected, pad_id)
    batch["num_tokens"] = torch.tensor(sum(len(p) + len(r) for p, r in chosen + rejected))
    return batch


def row_scores(rows: Sequence[dict], key: str) -> torch.Tensor:
    return torch.tensor([row[key] for row in rows], dtype=torch.float32)
