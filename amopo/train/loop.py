"""The training loop on accelerate: one process on CPU by default, the same code under torchrun with
DDP or FSDP2 sharding (``fsdp_config``), on one node or many.

Update rule per optimizer step with G = batch_size × gradient_accumulation_steps × world_size pairs:
    θ ← AdamW(θ, ∇ (1/G) Σ_{pairs in step} ℓ_pair)
Each process back-propagates Σ_{its pairs} ℓ / (batch_size × gradient_accumulation_steps); data parallelism averages
over processes, so the update equals that of one process with a batch of G.

:func:`train` is three parts, as a recipe: :func:`set_up` (accelerator, data, model and its fast
path, optimizer, reference, resume, tracking), :func:`run_steps` (the optimizer steps, metrics and
checkpoints) and :func:`finish` (held-out accuracy, the model folder, the summary).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import torch

from amopo import config as config_lib
from amopo.chat_template import write_chat_template
from amopo.data.prompts import CONDITIONING_FILE, conditioning_spec, has_chat_template
from amopo.errors import ConfigError
from amopo.models import load_model, load_tokenizer
from amopo.tracking import Run
from amopo.train import reference as ref_lib
from amopo.train.batching import micro_batches, steps_per_epoch
from amopo.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from amopo.train.config import TrainConfig
from amopo.train.dropout import DropoutOff, base_config_values, disable_dropout
from amopo.train.forward import check_attention_device, compile_decoder_layers, supports_block_mask
from amopo.train.fsdp import fsdp_plugin, refuse_unsupported, shard_on_cpu_too
from amopo.train import modpo as modpo_lib
from amopo.train.heldout import heldout_fingerprint, preference_accuracy
from amopo.train.lean_ops import use_lean_activations
from amopo.train.step import head_bypass_problem, micro_step
from amopo.train.trainer_status import TrainerStatusReporter


@dataclass
class Session:
    """What set-up hands to the step loop and to finishing."""
    cfg: TrainConfig
    accelerator: Any
    out: Path
    tokenizer: Any
    rows: Any
    dimensions: list[str]
    heldout_rows: list
    model: Any
    optimizer: Any
    scheduler: Any
    reference_logps: Callable | None
    run: Run
    total_steps: int
    global_batch: int
    step: int
    summary: dict = field(default_factory=dict)
    dropout: DropoutOff | None = None
    trainer_status: TrainerStatusReporter | None = None   # rank 0, under the Trainer's TrainJobStatus gate

    @property
    def history_path(self) -> Path:
        return self.out / "history.jsonl"


def train(cfg: TrainConfig) -> dict:
    """Train as configured; returns the summary also written to OUTPUT/metrics.json."""
    session = set_up(cfg)
    run_steps(session)
    return finish(session)


# ------------------------------------------------------------------ set-up


def mixed_precision(choice: str) -> str:
    """``auto`` → bf16 on a CUDA GPU that has it, else no; other choices as they are."""
    if choice != "auto":
        return choice
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def _accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if cfg.fsdp_config and not distributed:
        raise ConfigError("train config: fsdp_config shards the model across processes; start `amopo train` "
                          "with torchrun (e.g. torchrun --nproc-per-node 2 -m amopo train ...)")
    kwargs: dict = {"mixed_precision": mixed_precision(cfg.mixed_precision),
                    # Under torchrun on machines without CUDA, accelerate only starts gloo when told cpu=True.
                    "cpu": distributed and not torch.cuda.is_available(),
                    "kwargs_handlers": [InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.dist_timeout_s))]}
    if not distributed:
        # accelerate keeps one state per process; a second train() here may ask for another precision.
        from accelerate.state import AcceleratorState
        AcceleratorState._reset_state(reset_partial_state=True)
    plugin = fsdp_plugin(cfg.fsdp_config) if cfg.fsdp_config else None
    accelerator = Accelerator(**kwargs, fsdp_plugin=plugin)
    if plugin is not None:
        shard_on_cpu_too(accelerator, plugin)
    return accelerator


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


def _build_model(cfg: TrainConfig) -> tuple[Any, dict, DropoutOff]:
    """The policy with its options applied, before accelerate wraps or shards it; and what was done."""
    model = load_model(cfg.base_model, attn_implementation=cfg.attention)
    dropout = disable_dropout(model)   # before LoRA, so that lora_dropout applies as configured
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if cfg.lora:
        model = _apply_lora(cfg, model)
    lean = use_lean_activations(model) if cfg.lean_activations else {}   # after LoRA: its projections stay
    if cfg.compile:
        compile_decoder_layers(model)
    return model, lean, dropout


def _fast_path(cfg: TrainConfig, model, lean: dict, probe_row: dict) -> dict[str, str]:
    """Which fast-path options are in effect on the prepared (possibly sharded) model, and why not.
    The head bypass of chunked log-probs is checked against the model's own logits on ``probe_row``."""
    def state(wanted: bool, works: bool, on: str, fallback: str) -> str:
        return "off" if not wanted else (on if works else f"fallback: {fallback}")

    bypass_problem = head_bypass_problem(model, probe_row) if cfg.chunked_logprobs else None
    return {
        "packing": state(cfg.packing, supports_block_mask(model), "on",
                         f"padded rows ({cfg.attention} attention takes no block mask)"),
        "chunked_logprobs": state(cfg.chunked_logprobs, bypass_problem is None, "on",
                                  f"full logits on response positions ({bypass_problem})"),
        "lean_activations": state(cfg.lean_activations, bool(sum(lean.values())),
                                  f"on ({lean.get('mlp', 0)} MLPs, {lean.get('rms_norm', 0)} norms"
                                  + (", gathered per block by FSDP" if cfg.fsdp_config else "") + ")",
                                  "the model's own MLP and norm forwards (no recognised module)"),
    }


def _total_steps(cfg: TrainConfig, num_rows: int, global_batch: int) -> int:
    per_epoch = steps_per_epoch(num_rows, global_batch)
    if per_epoch == 0:
        raise ConfigError(f"{cfg.data}: {num_rows} training pairs are fewer than one global batch of "
                          f"{global_batch} (batch_size × gradient_accumulation_steps × processes)")
    return cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(cfg.epochs * per_epoch))


def _reference(cfg: TrainConfig, mode: str | None, model, split, accelerator, pad_id: int):
    """The reference function for ``mode`` (after ``accelerator.prepare``, so that it runs under the
    policy's autocast; before any resume, so that it is the initial policy)."""
    if mode is None:
        return None
    if mode == "copy":
        return ref_lib.copy_of(model, accelerator, chunked=cfg.chunked_logprobs, chunk_rows=cfg.logprob_chunk_rows)
    if mode == "adapter":
        return ref_lib.adapter_disabled(model, accelerator, chunked=cfg.chunked_logprobs,
                                        chunk_rows=cfg.logprob_chunk_rows)
    settings = {"mixed_precision": accelerator.mixed_precision, "attention": cfg.attention,
                "packing": cfg.packing, "chunked_logprobs": cfg.chunked_logprobs}
    return ref_lib.precomputed(model, split.rows, cache=ref_lib.cache_file(split.cache_dir, cfg.base_model, settings),
                               packing=cfg.packing, chunked=cfg.chunked_logprobs, chunk_rows=cfg.logprob_chunk_rows,
                               batch_size=cfg.heldout_batch_size, pad_id=pad_id, device=accelerator.device,
                               accelerator=accelerator, progress=cfg.progress and accelerator.is_main_process,
                               log=accelerator.print)


def set_up(cfg: TrainConfig) -> Session:
    """Everything before the first step; a resumed run continues at its checkpoint's step."""
    from accelerate.utils import set_seed
    from transformers import get_cosine_schedule_with_warmup

    if not cfg.data:
        raise ConfigError("train: --data is required (a folder written by `amopo prepare`)")
    if not (Path(cfg.data) / "prepare.json").is_file():
        raise ConfigError(f"{cfg.data}: not a prepared data folder (no prepare.json); run `amopo prepare` first")
    refuse_unsupported(cfg)
    accelerator = _accelerator(cfg)
    check_attention_device(cfg.attention, accelerator.device)
    set_seed(cfg.seed)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    main, world = accelerator.is_main_process, accelerator.num_processes

    tokenizer = load_tokenizer(cfg.base_model)
    train_split, heldout = _load_splits(cfg, tokenizer, accelerator)
    rows, dimensions = train_split.rows, list(train_split.dimensions)
    if cfg.conditioned and not dimensions:
        raise ConfigError(f"{cfg.data}: loss 'amopo' needs at least one dimension in the prepared data")
    if cfg.objective == "modpo":
        accelerator.print(modpo_lib.check_margin(cfg.modpo_objective, cfg.modpo_margin, cfg.modpo_weight,
                                                 dimensions, rows, where=str(Path(cfg.data) / "train.jsonl")))
    global_batch = cfg.batch_size * cfg.gradient_accumulation_steps * world
    total_steps = _total_steps(cfg, len(rows), global_batch)

    model, lean, dropout = _build_model(cfg)
    ref_mode = ref_lib.reference_mode(cfg.objective, cfg.reference, lora=cfg.lora, sharded=bool(cfg.fsdp_config))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    fast_path = _fast_path(cfg, model, lean, rows[0])
    accelerator.print("fast path: " + "; ".join(f"{k} {v}" for k, v in fast_path.items()))
    accelerator.print(dropout.describe())
    reference_logps = _reference(cfg, ref_mode, model, train_split, accelerator, tokenizer.pad_token_id)

    step, run_id = 0, None
    if cfg.resume:
        latest = latest_checkpoint(out / "checkpoints")
        if latest is None:
            accelerator.print(f"--resume: no checkpoint in {out / 'checkpoints'}; starting from step 0")
        else:
            state = load_checkpoint(accelerator, latest)
            step, run_id = state["step"], state.get("mlflow_run_id")
            accelerator.print(f"Resumed from {latest} at step {step}")

    run = Run(main, cfg.mlflow_tracking_uri, cfg.mlflow_experiment, cfg.run_name, run_id=run_id,
              tags={"amopo.objective": cfg.objective, "amopo.base_model": cfg.base_model})
    resolved = config_lib.dump_yaml(cfg)
    if main:
        (out / "train_config.yaml").write_text(resolved)
        if run_id is None:
            run.log_params({**config_lib.to_dict(cfg), "dimensions": ",".join(dimensions),
                            "train_pairs": len(rows), "world_size": world, "total_steps": total_steps,
                            "resolved_mixed_precision": accelerator.mixed_precision,
                            "resolved_reference": ref_mode or "none",
                            "dropout_modules_changed": dropout.modules,
                            **{f"fast_path.{k}": v for k, v in fast_path.items()}})
            run.log_text(resolved, "train_config.yaml")
            run.log_text(json.dumps(train_split.report, indent=2, default=str), "tokenize_report.json")

    session = Session(
        cfg=cfg, accelerator=accelerator, out=out, tokenizer=tokenizer, rows=rows, dimensions=dimensions,
        heldout_rows=heldout.rows[: cfg.heldout_max_pairs or None] if heldout else [], model=model,
        optimizer=optimizer, scheduler=scheduler, reference_logps=reference_logps, run=run,
        total_steps=total_steps, global_batch=global_batch, step=step, dropout=dropout,
        summary={"objective": cfg.objective, "beta": cfg.effective_beta, "dimensions": dimensions, "train_pairs": len(rows), "total_steps": total_steps,
                 "world_size": world, "mixed_precision": accelerator.mixed_precision,
                 "fsdp": bool(cfg.fsdp_config), "reference": ref_mode, "fast_path": fast_path,
                 **dropout.summary()})
    if main:
        kept = [line for line in session.history_path.read_text().splitlines()
                if json.loads(line)["step"] <= step] if session.history_path.is_file() else []
        session.history_path.write_text("".join(line + "\n" for line in kept))
    if session.heldout_rows and step == 0:
        session.summary["heldout_base"] = _evaluate(session, "base")
        accelerator.print(f"held-out preference accuracy (base): {_fmt_acc(session.summary['heldout_base'])}")
    return session


def _evaluate(s: Session, tag: str) -> dict:
    res = preference_accuracy(s.model, s.heldout_rows, s.dimensions, pad_id=s.tokenizer.pad_token_id,
                              device=s.accelerator.device, batch_size=s.cfg.heldout_batch_size,
                              accelerator=s.accelerator, progress=s.cfg.progress and s.accelerator.is_main_process)
    s.run.log_metrics({f"heldout_{tag}/{k}": v for k, v in res.items()}, step=s.step)
    return res


# ------------------------------------------------------------------ the step loop


def _norm_value(norm) -> float:
    """clip_grad_norm_'s result as a float: a tensor, a DTensor (FSDP2), or None (nothing measured)."""
    if norm is None:
        return float("nan")
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


def _optimizer_step(s: Session) -> tuple[dict[str, float], int]:
    """One optimizer step over this process's micro-batches; (metric sums, logical tokens) of them."""
    cfg, accelerator, model = s.cfg, s.accelerator, s.model
    epoch, micro = micro_batches(len(s.rows), s.step, seed=cfg.seed, batch_size=cfg.batch_size,
                                 gradient_accumulation_steps=cfg.gradient_accumulation_steps, world_size=accelerator.num_processes,
                                 rank=accelerator.process_index)
    sums: dict[str, float] = {}
    tokens = 0
    for m, idx in enumerate(micro):
        with (nullcontext() if m == len(micro) - 1 else accelerator.no_sync(model)):
            per_example, part, ntok = micro_step(
                cfg, model, [s.rows[i] for i in idx], dimensions=s.dimensions, epoch=epoch,
                pad_id=s.tokenizer.pad_token_id, device=accelerator.device, reference_logps=s.reference_logps)
            accelerator.backward(per_example.sum() / (cfg.batch_size * cfg.gradient_accumulation_steps))
        for k, v in part.items():
            sums[k] = sums.get(k, 0.0) + v
        tokens += ntok
    sums["grad_norm"] = _norm_value(accelerator.clip_grad_norm_(model.parameters(),
                                                                cfg.max_grad_norm or float("inf")))
    sums["learning_rate"] = s.scheduler.get_last_lr()[0]
    s.optimizer.step()
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    return sums, tokens


def _step_metrics(s: Session, sums: dict[str, float], tokens: int, seconds: float) -> dict[str, float]:
    """Per-pair means over all processes, plus lr, gradient norm, tokens/s and epoch."""
    keys = sorted(k for k in sums if k not in ("learning_rate", "grad_norm"))
    totals = torch.tensor([sums[k] for k in keys] + [float(tokens)], device=s.accelerator.device,
                          dtype=torch.float64)
    if s.accelerator.num_processes > 1:
        totals = s.accelerator.reduce(totals, reduction="sum")
    metrics = {k: totals[i].item() / s.global_batch for i, k in enumerate(keys)}
    metrics.update(learning_rate=sums["learning_rate"], grad_norm=sums["grad_norm"], tokens_per_s=totals[-1].item() / seconds,
                   seconds_per_step=seconds, epoch=s.step / steps_per_epoch(len(s.rows), s.global_batch))
    return metrics


def run_steps(s: Session) -> None:
    """Optimizer steps from ``s.step`` to ``s.total_steps``: history, MLflow metrics, progress bar and
    a checkpoint every ``save_every`` steps. A failure marks the MLflow run FAILED and propagates."""
    cfg, main = s.cfg, s.accelerator.is_main_process
    bar = None
    if cfg.progress and main:
        from tqdm.auto import tqdm
        bar = tqdm(total=s.total_steps, initial=s.step, desc=f"train {cfg.objective}", unit="step")
    s.model.train()
    if main and s.trainer_status is None:
        s.trainer_status = TrainerStatusReporter.from_env(start_step=s.step)
    finished = False
    try:
        while s.step < s.total_steps:
            t0 = time.perf_counter()
            sums, tokens = _optimizer_step(s)
            s.step += 1
            metrics = _step_metrics(s, sums, tokens, time.perf_counter() - t0)
            if main:
                with s.history_path.open("a") as fh:
                    fh.write(json.dumps({"step": s.step, **metrics}) + "\n")
                if s.step % cfg.log_every == 0 or s.step == s.total_steps:
                    s.run.log_metrics(metrics, step=s.step)
                if s.trainer_status is not None:   # hands over and returns; a thread posts it
                    s.trainer_status.report(s.step, s.total_steps, metrics)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", acc=f"{_mean_acc(metrics):.2f}",
                                tok_s=f"{metrics['tokens_per_s']:.0f}")
            if cfg.save_every and s.step % cfg.save_every == 0 and s.step < s.total_steps:
                save_checkpoint(s.accelerator, s.out / "checkpoints", s.step, {"mlflow_run_id": s.run.run_id},
                                cfg.keep_checkpoints)
        finished = True
    finally:
        if bar is not None:
            bar.close()
        if not finished:
            s.run.end("FAILED")
            if s.trainer_status is not None:
                s.trainer_status.close()


# ------------------------------------------------------------------ finishing


def _write_model(s: Session) -> Path:
    """OUTPUT/model: a whole Hugging Face folder (gathered from the shards under FSDP), written atomically,
    with the conditioning spec (``amopo_conditioning.json``) of a model trained on conditioned prompts
    and, when its tokenizer has a chat template, the steering chat template compiled from it
    (``chat_template.jinja``, :mod:`amopo.chat_template`)."""
    cfg, accelerator = s.cfg, s.accelerator
    final = s.out / "model"
    unwrapped = accelerator.unwrap_model(s.model)
    state_dict = accelerator.get_state_dict(s.model)   # a collective under FSDP: every rank calls it
    if accelerator.is_main_process:
        tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=s.out))
        with base_config_values(s.dropout):   # the written config keeps the base model's dropout
            if cfg.lora and cfg.merge_lora:
                unwrapped.merge_and_unload().save_pretrained(str(tmp), safe_serialization=True)
            else:
                unwrapped.save_pretrained(str(tmp), state_dict=state_dict, safe_serialization=True)
        s.tokenizer.save_pretrained(str(tmp))
        if cfg.conditioned:
            (tmp / CONDITIONING_FILE).write_text(json.dumps(_conditioning(cfg), indent=2) + "\n")
            if has_chat_template(s.tokenizer):   # steering by chat_template_kwargs on any engine
                write_chat_template(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    accelerator.wait_for_everyone()
    return final


def _conditioning(cfg: TrainConfig) -> dict:
    """The conditioning spec of the prepared data's dimensions, as training rendered their prefixes,
    plus ``steer_trained``: the dimensions the train split showed in both orientations (prepare.json's
    ``steer_trained``; see ``amopo.data.orientations.both_orientations``), the ones evaluation measures
    steering on by default."""
    from amopo.data.dimensions import Dimension
    from amopo.data.tokenize import manifest_prompt_style, read_manifest

    manifest = read_manifest(cfg.data)
    dims = [Dimension.from_json(d) for d in manifest["dimensions"]]
    spec = conditioning_spec(dims, accumulate=cfg.accumulate_prefixes, style=manifest_prompt_style(manifest))
    if "steer_trained" in manifest:   # absent from folders prepared before it was recorded
        spec["steer_trained"] = list(manifest["steer_trained"])
    return spec


def peak_memory_bytes(device) -> int:
    """This process's peak memory: CUDA memory allocated on a GPU, else the peak resident set size."""
    if torch.device(device).type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024   # Linux reports kB


def finish(s: Session) -> dict:
    """Held-out accuracy of the trained model, OUTPUT/model, metrics.json, curves; the summary."""
    cfg, accelerator, summary = s.cfg, s.accelerator, s.summary
    if s.heldout_rows:
        summary["heldout_final"] = _evaluate(s, "final")
        summary["heldout_fingerprint"] = heldout_fingerprint(cfg.data, max_length=cfg.max_length,
                                                             max_pairs=cfg.heldout_max_pairs,
                                                             accumulate_prefixes=cfg.accumulate_prefixes)
        accelerator.print(f"held-out preference accuracy (trained): {_fmt_acc(summary['heldout_final'])}")
    model_dir = _write_model(s)
    summary.update(model_dir=str(model_dir), metrics_path=str(s.out / "metrics.json"),
                   curves_path=str(s.out / "training_curves.png"), mlflow_run_id=s.run.run_id,
                   mlflow_tracking_uri=s.run.uri, steps=s.step,
                   peak_memory_bytes=peak_memory_bytes(accelerator.device))
    if accelerator.is_main_process:
        (s.out / "metrics.json").write_text(json.dumps(summary, indent=2))
        from amopo.train.plots import plot_history
        figure = plot_history(s.history_path, s.out / "training_curves.png",
                              s.dimensions if cfg.conditioned else ["plain"])
        s.run.log_artifact(s.out / "metrics.json")
        s.run.log_artifact(s.history_path)
        if figure:
            s.run.log_artifact(figure)
        s.run.end()
        if s.trainer_status is not None:   # 100 %, sent at once (or by the time the process exits)
            s.trainer_status.finish(s.step, s.total_steps)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def _mean_acc(metrics: dict) -> float:
    accs = [v for k, v in metrics.items() if k.startswith("accuracy/")]
    return sum(accs) / len(accs) if accs else float("nan")


def _fmt_acc(res: dict) -> str:
    parts = [f"{k.split('/', 1)[1]}={v:.3f}" for k, v in res.items() if k.startswith("accuracy/")]
    return ", ".join(parts)
