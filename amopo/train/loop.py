"""The training loop on accelerate: one process on CPU by default, the same code under
``accelerate launch`` / torchrun with DDP, FSDP or DeepSpeed, on one node or many.

Update rule per optimizer step with G = batch_size × grad_accum × world_size pairs:
    θ ← AdamW(θ, ∇ (1/G) Σ_{pairs in step} ℓ_pair)
Each process back-propagates Σ_{its pairs} ℓ / (batch_size × grad_accum); data parallelism averages
over processes, so the update equals that of one process with a batch of G.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from amopo import config as config_lib
from amopo.errors import ConfigError
from amopo.evaluate.heldout import heldout_fingerprint
from amopo.evaluate.preference import preference_accuracy
from amopo.models import load_model, load_tokenizer
from amopo.tracking import Run
from amopo.train.batching import micro_batches, steps_per_epoch
from amopo.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from amopo.train.config import TrainConfig
from amopo.train.forward import compile_decoder_layers
from amopo.train.lean_ops import use_lean_activations
from amopo.train.step import micro_step, sequence_stats


def _mixed_precision(choice: str) -> str:
    if choice != "auto":
        return choice
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def _load_splits(cfg: TrainConfig, tokenizer, accelerator):
    from amopo.data.tokenize import load_tokenized

    data = Path(cfg.data)
    show = cfg.progress and accelerator.is_main_process
    # Rank 0 tokenises into the cache; the others then read it.
    with accelerator.main_process_first():
        train = load_tokenized(data, tokenizer, "train", max_length=cfg.max_length,
                               accumulate_prefixes=cfg.accumulate_prefixes, show_progress=show)
        heldout = None
        if cfg.eval_heldout and (data / "eval.jsonl").is_file() and (data / "eval.jsonl").stat().st_size > 0:
            heldout = load_tokenized(data, tokenizer, "eval", max_length=cfg.max_length,
                                     accumulate_prefixes=cfg.accumulate_prefixes, show_progress=show)
    return train, heldout


def _apply_lora(cfg: TrainConfig, model):
    from peft import LoraConfig, get_peft_model

    targets = cfg.lora_target_modules
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets[0] if targets == ["all-linear"] else targets, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def _reference_mode(cfg: TrainConfig) -> str | None:
    if cfg.loss not in ("dpo", "modpo"):
        return None
    return cfg.reference if cfg.reference != "auto" else ("adapter" if cfg.lora else "copy")


def _reference_stats_fn(mode: str | None, model, reference, accelerator):
    """A function batch → SeqStats of the frozen reference (dpo/modpo), or None."""
    if mode is None:
        return None
    if mode == "copy":
        return lambda batch: sequence_stats(reference, batch)

    def adapter_disabled(batch):
        peft_model = accelerator.unwrap_model(model)
        with peft_model.disable_adapter():
            return sequence_stats(peft_model, batch)
    return adapter_disabled


def _write_model(cfg: TrainConfig, model, tokenizer, accelerator, out: Path) -> Path:
    final = out / "model"
    unwrapped = accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=out))
        if cfg.lora and cfg.merge_lora:
            merged = unwrapped.merge_and_unload()
            merged.save_pretrained(str(tmp), safe_serialization=True)
        else:
            unwrapped.save_pretrained(str(tmp), state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    accelerator.wait_for_everyone()
    return final


def _total_steps(cfg: TrainConfig, num_rows: int, global_batch: int) -> int:
    per_epoch = steps_per_epoch(num_rows, global_batch)
    if per_epoch == 0:
        raise ConfigError(f"{cfg.data}: {num_rows} training pairs are fewer than one global batch of "
                          f"{global_batch} (batch_size × grad_accum × processes)")
    return cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(cfg.epochs * per_epoch))


def train(cfg: TrainConfig) -> dict:
    """Train as configured; returns the summary also written to OUTPUT/metrics.json."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_cosine_schedule_with_warmup

    if not cfg.data:
        raise ConfigError("train: --data is required (a folder written by `amopo prepare`)")
    if not (Path(cfg.data) / "prepare.json").is_file():
        raise ConfigError(f"{cfg.data}: not a prepared data folder (no prepare.json); run `amopo prepare` first")
    # Under torchrun on machines without CUDA, accelerate only starts gloo when told cpu=True.
    cpu_distributed = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(mixed_precision=_mixed_precision(cfg.mixed_precision), cpu=cpu_distributed)
    set_seed(cfg.seed)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    main = accelerator.is_main_process
    world, rank = accelerator.num_processes, accelerator.process_index

    tokenizer = load_tokenizer(cfg.model)
    train_split, heldout = _load_splits(cfg, tokenizer, accelerator)
    rows, dimensions = train_split.rows, list(train_split.dimensions)
    if cfg.conditioned and not dimensions:
        raise ConfigError(f"{cfg.data}: loss 'amopo' needs at least one dimension in the prepared data")
    global_batch = cfg.batch_size * cfg.grad_accum * world
    total_steps = _total_steps(cfg, len(rows), global_batch)

    model = load_model(cfg.model, attn_implementation=cfg.attention)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if cfg.lora:
        model = _apply_lora(cfg, model)
    if cfg.lean_activations:
        use_lean_activations(model)   # after LoRA: projections it wraps are left as they are
    if cfg.compile:
        compile_decoder_layers(model)
    ref_mode = _reference_mode(cfg)
    reference = None
    if ref_mode == "copy":
        reference = copy.deepcopy(model).eval().requires_grad_(False).to(accelerator.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    reference_stats = _reference_stats_fn(ref_mode, model, reference, accelerator)

    ckpt_root = out / "checkpoints"
    step, run_id = 0, None
    if cfg.resume:
        latest = latest_checkpoint(ckpt_root)
        if latest is None:
            accelerator.print(f"--resume: no checkpoint in {ckpt_root}; starting from step 0")
        else:
            state = load_checkpoint(accelerator, latest)
            step, run_id = state["step"], state.get("mlflow_run_id")
            accelerator.print(f"Resumed from {latest} at step {step}")

    run = Run(main, cfg.mlflow_tracking_uri, cfg.mlflow_experiment, cfg.run_name, run_id=run_id,
              tags={"amopo.loss": cfg.loss, "amopo.base_model": cfg.model})
    resolved = config_lib.dump_yaml(cfg)
    if main:
        (out / "train_config.yaml").write_text(resolved)
        if run_id is None:
            run.log_params({**config_lib.to_dict(cfg), "dimensions": ",".join(dimensions),
                            "train_pairs": len(rows), "world_size": world, "total_steps": total_steps})
            run.log_text(resolved, "train_config.yaml")
            run.log_text(json.dumps(train_split.report, indent=2, default=str), "tokenize_report.json")

    pad_id = tokenizer.pad_token_id
    device = accelerator.device
    heldout_rows = heldout.rows[: cfg.eval_max_pairs or None] if heldout else []
    summary: dict = {"loss": cfg.loss, "dimensions": dimensions, "train_pairs": len(rows),
                     "total_steps": total_steps, "world_size": world}

    def evaluate(tag: str) -> dict:
        res = preference_accuracy(model, heldout_rows, dimensions, pad_id=pad_id, device=device,
                                  batch_size=cfg.eval_batch_size, accelerator=accelerator,
                                  progress=cfg.progress and main)
        run.log_metrics({f"heldout_{tag}/{k}": v for k, v in res.items()}, step=step)
        return res

    if heldout_rows and step == 0:
        summary["heldout_base"] = evaluate("base")
        accelerator.print(f"held-out preference accuracy (base): {_fmt_acc(summary['heldout_base'])}")

    history_path = out / "history.jsonl"
    if main:
        kept = [line for line in history_path.read_text().splitlines()
                if json.loads(line)["step"] <= step] if history_path.is_file() else []
        history_path.write_text("".join(line + "\n" for line in kept))

    bar = None
    if cfg.progress and main:
        from tqdm.auto import tqdm
        bar = tqdm(total=total_steps, initial=step, desc=f"train {cfg.loss}", unit="step")

    model.train()
    status = "FAILED"
    try:
        while step < total_steps:
            t0 = time.perf_counter()
            epoch, micro = micro_batches(len(rows), step, seed=cfg.seed, batch_size=cfg.batch_size,
                                         grad_accum=cfg.grad_accum, world_size=world, rank=rank)
            sums: dict[str, float] = {}
            tokens = 0
            for m, idx in enumerate(micro):
                sync = m == len(micro) - 1
                with (nullcontext() if sync else accelerator.no_sync(model)):
                    per_example, part, ntok = micro_step(
                        cfg, model, [rows[i] for i in idx], dimensions=dimensions, epoch=epoch, pad_id=pad_id,
                        device=device, reference_stats=reference_stats)
                    accelerator.backward(per_example.sum() / (cfg.batch_size * cfg.grad_accum))
                for k, v in part.items():
                    sums[k] = sums.get(k, 0.0) + v
                tokens += ntok
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm or float("inf"))
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            keys = sorted(sums)
            totals = torch.tensor([sums[k] for k in keys] + [float(tokens)], device=device, dtype=torch.float64)
            if world > 1:
                totals = accelerator.reduce(totals, reduction="sum")
            seconds = time.perf_counter() - t0
            metrics = {k: totals[i].item() / global_batch for i, k in enumerate(keys)}
            metrics.update(lr=lr, grad_norm=float(grad_norm), tokens_per_s=totals[-1].item() / seconds,
                           seconds_per_step=seconds, epoch=step / steps_per_epoch(len(rows), global_batch))
            if main:
                with history_path.open("a") as fh:
                    fh.write(json.dumps({"step": step, **metrics}) + "\n")
                if step % cfg.log_every == 0 or step == total_steps:
                    run.log_metrics(metrics, step=step)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{_mean_acc(metrics):.2f}",
                                tok_s=f"{metrics['tokens_per_s']:.0f}")
            if cfg.save_every and step % cfg.save_every == 0 and step < total_steps:
                save_checkpoint(accelerator, ckpt_root, step, {"mlflow_run_id": run.run_id}, cfg.keep_checkpoints)
        status = "FINISHED"
    finally:
        if bar is not None:
            bar.close()
        if status != "FINISHED":
            run.end("FAILED")

    if heldout_rows:
        summary["heldout_final"] = evaluate("final")
        summary["heldout_fingerprint"] = heldout_fingerprint(cfg.data, max_length=cfg.max_length,
                                                             max_pairs=cfg.eval_max_pairs,
                                                             accumulate_prefixes=cfg.accumulate_prefixes)
        accelerator.print(f"held-out preference accuracy (trained): {_fmt_acc(summary['heldout_final'])}")
    model_dir = _write_model(cfg, model, tokenizer, accelerator, out)
    summary.update(model_dir=str(model_dir), metrics_path=str(out / "metrics.json"),
                   curves_path=str(out / "training_curves.png"), mlflow_run_id=run.run_id,
                   mlflow_tracking_uri=run.uri, steps=step)
    if main:
        (out / "metrics.json").write_text(json.dumps(summary, indent=2))
        from amopo.train.plots import plot_history
        figure = plot_history(history_path, out / "training_curves.png", dimensions if cfg.conditioned else ["plain"])
        run.log_artifact(out / "metrics.json")
        run.log_artifact(history_path)
        if figure:
            run.log_artifact(figure)
        run.end()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def _mean_acc(metrics: dict) -> float:
    accs = [v for k, v in metrics.items() if k.startswith("accuracy/")]
    return sum(accs) / len(accs) if accs else float("nan")


def _fmt_acc(res: dict) -> str:
    parts = [f"{k.split('/', 1)[1]}={v:.3f}" for k, v in res.items() if k.startswith("accuracy/")]
    return ", ".join(parts)
