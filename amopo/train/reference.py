"""The frozen reference of DPO and MODPO: log π_ref(y | x) = Σ_t log π_ref(y_t | x, y_<t) of each
chosen and rejected response to the plain prompt, with π_ref the initial policy.

    precomputed  one pass of the initial policy over the training rows before the first step, the
                 sums cached beside the tokenised split (``<split cache>/reference/<key>.pt``, keyed
                 by reference model, tokenised data and numeric settings); a resumed or repeated run
                 reads them. No second model is ever held: the default whenever the policy is sharded.
    copy         a frozen deep copy of the initial policy, run on every micro-batch (one more whole,
                 unsharded model per process).
    adapter      the policy itself with its LoRA adapter disabled.

Every mode computes as the policy does: through the forward that ``accelerator.prepare`` wraps in the
mixed-precision autocast, with the policy's log-prob settings, so at step 0 the policy-minus-reference
log-ratios are exactly zero and the modes agree on the same batches.

A reference is a function ``(rows, batch) → logp_sum [2·B]`` (chosen block, then rejected block,
the order of :func:`amopo.train.batching.collate`).

The precomputed table is laid out by row position in the split; a row is found by its ``id`` through
the split's id → position map, because pairs dropped for length leave gaps in ``id``
(:mod:`amopo.data.tokenize`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import torch

from amopo.train.batching import collate, even_shard
from amopo.train.forward import grouped_kv_on_cpu, supports_block_mask
from amopo.train.packing import collate_packed
from amopo.train.step import sequence_stats

ReferenceLogps = Callable[[Sequence[dict], dict], torch.Tensor]
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
# Part of the cache key: tables of the earlier layout (indexed by id) are never read as this one.
_TABLE_LAYOUT = "row-position-v2"


def reference_mode(loss: str, reference: str, *, lora: bool, sharded: bool) -> str | None:
    """The mode for ``reference`` ("auto" resolved), or None when ``loss`` needs no reference."""
    if loss not in ("dpo", "modpo"):
        return None
    if reference != "auto":
        return reference
    return "precomputed" if sharded else ("adapter" if lora else "copy")


def copy_of(model, accelerator, *, chunked: bool = True, chunk_rows: int = 0) -> ReferenceLogps:
    """Mode ``copy``: a frozen deep copy of the prepared policy ``model`` as it is now (call after
    ``accelerator.prepare`` and before training or resuming).

    The copy is taken of the unwrapped module, which keeps the forward that prepare wrapped in the
    mixed-precision autocast (a copy taken before prepare would run in fp32 beside a bf16 policy).
    """
    frozen = copy.deepcopy(accelerator.unwrap_model(model)).eval().requires_grad_(False)

    def logps(rows, batch):
        with grouped_kv_on_cpu(batch["input_ids"].device):
            return sequence_stats(frozen, batch, chunked=chunked, chunk_rows=chunk_rows).logp_sum
    return logps


def adapter_disabled(model, accelerator, *, chunked: bool = True, chunk_rows: int = 0) -> ReferenceLogps:
    """Mode ``adapter``: the prepared PEFT ``model`` (its forward under prepare's autocast) with its
    adapter switched off for the reference pass."""
    def logps(rows, batch):
        peft_model = accelerator.unwrap_model(model)
        with peft_model.disable_adapter(), grouped_kv_on_cpu(batch["input_ids"].device):
            return sequence_stats(peft_model, batch, chunked=chunked, chunk_rows=chunk_rows).logp_sum
    return logps


def model_identity(path: str) -> dict:
    """What identifies a model folder's weights without reading them: the config's bytes and each
    weight file's name, size and modification time (a hub id or other name stands for itself)."""
    folder = Path(path)
    if not folder.is_dir():
        return {"name": path}
    files = sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
    config = folder / "config.json"
    return {"config_sha256": hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None,
            "weights": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]}


def cache_file(split_cache: Path, model_path: str, settings: dict) -> Path:
    """``<split cache>/reference/<key>.pt`` for this reference model and these settings."""
    key = hashlib.sha256(json.dumps({"model": model_identity(model_path), "settings": settings,
                                     "layout": _TABLE_LAYOUT}, sort_keys=True).encode()).hexdigest()[:16]
    return split_cache / "reference" / f"{key}.pt"


@torch.no_grad()
def _reference_pass(model, rows, *, packing: bool, chunked: bool, chunk_rows: int, batch_size: int, pad_id: int,
                    device, accelerator, progress: bool) -> torch.Tensor:
    """[len(rows), 2] float64: log π(y_w | x), log π(y_l | x) of ``rows[i]`` in row i under ``model``,
    each process computing a share of the rows (the same number of passes on all) and all gathering all."""
    rank, world = accelerator.process_index, accelerator.num_processes
    indices, counted = even_shard(list(range(len(rows))), rank, world)
    packed = packing and supports_block_mask(model)
    mine = torch.full((len(indices), 3), -1.0, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    starts = range(0, len(indices), batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc="reference log-probs", unit="batch", leave=False)
    for start in starts:
        chunk = [rows[i] for i in indices[start:start + batch_size]]
        batch = collate_packed(chunk, False, pad_id) if packed else collate(chunk, False, pad_id)
        batch = {n: t.to(device) for n, t in batch.items()}
        with grouped_kv_on_cpu(device):
            logp = sequence_stats(model, batch, chunked=chunked, chunk_rows=chunk_rows).logp_sum.double()
        n = len(chunk)
        for j in range(n):
            if start + j < counted:
                mine[start + j] = torch.stack([logp.new_tensor(float(indices[start + j])), logp[j], logp[n + j]])
    if was_training:
        model.train()
    every = accelerator.gather(mine) if world > 1 else mine
    table = torch.full((len(rows), 2), float("nan"), dtype=torch.float64)
    for position, w, l in every.cpu().tolist():
        if position >= 0:   # -1: a repeat that pads a process's share
            table[int(position)] = torch.tensor([w, l], dtype=torch.float64)
    return table


def row_positions(rows) -> dict[int, int]:
    """``{row id: position in rows}``; raises ValueError naming an id that occurs twice."""
    dataset = getattr(rows, "dataset", None)   # tokenize.Rows: read the id column, not every row
    ids = dataset["id"] if dataset is not None else [row["id"] for row in rows]
    positions: dict[int, int] = {}
    for position, row_id in enumerate(ids):
        if positions.setdefault(int(row_id), position) != position:
            raise ValueError(f"training rows: id {row_id} occurs at positions {positions[int(row_id)]} and "
                             f"{position}; reference log-probs are looked up by id")
    return positions


def _save(table: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    torch.save(table, tmp)
    os.replace(tmp, path)


def precomputed(model, rows, *, cache: Path, packing: bool, chunked: bool, chunk_rows: int, batch_size: int,
                pad_id: int, device, accelerator, progress: bool = False,
                log: Callable[[str], None] = print) -> ReferenceLogps:
    """Mode ``precomputed``: read ``cache`` or make it with one pass of ``model`` (the initial policy,
    prepared as it will be trained) over ``rows``; returns the lookup of a batch's rows by their id.
    Raises RuntimeError when the table does not cover ``rows`` (a table that does not is never saved)."""
    positions = row_positions(rows)
    if cache.is_file():
        table = torch.load(cache, weights_only=True)
        _check_covers(table, len(rows), cache)
        log(f"reference log-probs: {len(rows)} pairs read from {cache}")
    else:
        table = _reference_pass(model, rows, packing=packing, chunked=chunked, chunk_rows=chunk_rows,
                                batch_size=batch_size, pad_id=pad_id, device=device, accelerator=accelerator,
                                progress=progress)
        _check_covers(table, len(rows), cache)
        if accelerator.is_main_process:
            _save(table, cache)
        accelerator.wait_for_everyone()
        log(f"reference log-probs: {len(rows)} pairs computed once by the initial policy, cached in {cache}")

    def logps(batch_rows, batch):
        missing = [r["id"] for r in batch_rows if r["id"] not in positions]
        if missing:
            raise LookupError(f"rows with id {missing} are not among the {len(positions)} training pairs whose "
                           f"reference log-probs are in {cache}")
        picked = table[torch.tensor([positions[r["id"]] for r in batch_rows])].to(torch.float32)
        return torch.cat([picked[:, 0], picked[:, 1]]).to(batch["input_ids"].device)
    return logps


def _check_covers(table: torch.Tensor, num_rows: int, cache: Path) -> None:
    """Raise RuntimeError unless ``table`` is [num_rows, 2] with no NaN (a row no process computed)."""
    if table.shape != (num_rows, 2) or torch.isnan(table).any():
        raise RuntimeError(f"{cache}: reference log-probs do not cover the {num_rows} training pairs "
                           f"(table {tuple(table.shape)}, {int(torch.isnan(table).any(dim=-1).sum())} rows "
                           "missing); delete it")
