"""Training benchmark: our AMoPO and SimPO steps against TRL's CPO-SimPO and DPO trainers, in one run,
on the same model, data, sequence lengths, global batch and threads.

    .venv/bin/python bench/train_throughput.py --tiny          # tiny random model, 2 pairs, 1 step (< 2 min)
    .venv/bin/python bench/train_throughput.py                 # embedded SmolLM2-135M-Instruct, sample set
    .venv/bin/python bench/train_throughput.py --arms amopo trl-cpo-simpo --steps 1 --threads 2

Arms (each runs in its own child process, one after the other, so its peak memory is its own):

    amopo          our AMoPO step, fast path (TrainConfig defaults: packing, chunked log-probs, lean activations)
    amopo-plain    our AMoPO step on the plain path (packing=False, chunked_logprobs=False, lean_activations=False)
    simpo          our SimPO step (objective="simpo") on the K-expanded pairs: every (pair, dimension) becomes
                   one row whose plain prompt is the conditioned prompt x*_k, so it sees exactly the tokens
                   the TRL arms see (our SimPO normally uses the unconditioned prompt, K = 1)
    trl-cpo-simpo  trl.experimental.cpo.CPOTrainer(loss_type="simpo", cpo_alpha=0): pure SimPO
    trl-dpo        trl.DPOTrainer (sigmoid loss; reference = a frozen copy of the model, TRL's default)

K-expanded pairs: each (pair, dimension k) is one preference pair (x*_k, y_w, y_l). One optimizer step
takes --pairs pairs (default 4) = 4·K = 16 K-expanded pairs, the same ones in the same order for every
arm (the trainer's seeded data order). Our AMoPO arms take the 4 pairs as they are (2·K sequences each);
the other arms take the 16 K-expanded pairs as one batch (2 sequences each): 32 sequences per step for
all. Our arms run the library's step (``amopo.train.step.micro_step``) with the loop's update
(backward of Σ loss / batch, gradient clipping, AdamW, zero_grad); the TRL arms run ``trainer.train()``.
All: lr --learning-rate, constant (no warmup), AdamW (ours torch.optim.AdamW; TRL's default, the fused AdamW),
each trainer's default gradient clipping (ours 3.0, TRL 1.0), dropout off, gradient checkpointing off
(TRL defaults it on; ours off), fp32 on CPU, bf16 autocast on CUDA (as ``mixed_precision: auto``
gives: ours through accelerate's ``Accelerator(mixed_precision="bf16")`` as amopo/train/loop.py does, so
the model's forward is autocast and the chunked head runs on its fp32 outputs; TRL with ``bf16=True``;
fp32 weights in all), one GPU (a child sees only the first unless CUDA_VISIBLE_DEVICES says otherwise),
max_length 1024 (nothing is truncated). β/γ: AMoPO and SimPO arms β = 0.8, γ = 2.0
(TRL simpo_gamma = 2.0 is the same margin); DPO β = 0.1 (both defaults).

Measured per arm: --warmup-steps (default 1) untimed steps, then --steps (default 2: the default run
takes about 20 minutes on 2 busy CPU cores, 60-160 s per step) timed optimizer steps; a step's time runs
from the end of the previous step to the end of this one (data collation included). Reported: median
seconds per step; tokens/s = logical tokens of the timed steps / their time, where logical tokens are,
for every arm alike, Σ over the K-expanded pairs of |x*_k|+|y_w| + |x*_k|+|y_l| (no padding), counted
once here from our tokenised rows, so work an arm saves shows up as speed; the child's peak RSS after
training and after model + data load (VmHWM, see ``peak_rss_mb``; on CUDA ``max_memory_allocated``,
reset when the child starts);
two FLOP counts per arm, both 6 × non-embedding parameters N per token through the trained model (+ 2 × N
per token through DPO's frozen reference; no attention term, so both err low by the attention matmuls,
about a tenth at these lengths):
  logical FLOPs   over the logical tokens: the work an unpacked trainer would do on these pairs;
  executed FLOPs  over the tokens the arm really runs through the model: the input_ids of every forward,
                  padding included (counted by a forward pre-hook on the model, and on DPO's reference;
                  checked against the collated batch: our packed arms ``collate_packed`` rows, each prompt
                  once with both responses; amopo-plain ``collate``; TRL both sequences of every K-expanded
                  pair, all padded to the longest).
MFU = executed FLOPs / time / peak, where peak = the best of --matmul-trials timed n×n matmuls in the
arms' dtype (fp32 on CPU, bf16 on CUDA; a warm-up first, CUDA synchronised), measured before the arms and
again after them (the best of all trials counts; every trial is in the JSON), so one busy moment cannot
inflate MFU. An MFU above 100% cannot be real and is printed, and recorded, as "> 100% (check the peak)".
Beside it, under its own name, the logical-work rate = logical FLOPs / time / peak: it exceeds MFU by the
work packing saves (so it may pass 100%). Every arm also reports its
first-step loss (our SimPO and TRL's CPO-SimPO compute the same loss on the same tokens, so they agree),
and each TRL arm checks that its own tokenisation gives exactly our token ids.

Data: ``amopo prepare`` of the shipped sample set, timed (pairs/s), then re-run (a re-run of ``prepare``
builds a fresh folder and tokenises again; what reads the token cache is the trainer's
``load_tokenized`` of the prepared folder, timed as well). The shipped responses
are short (≈ 20 tokens) and the conditioned prompts ≈ 76 tokens; --prompt-tokens / --response-tokens
(default 130 / 100) stretch them to a realistic shape: the user text and each response are repeated
(joined by a space) and cut to the target number of tokens of the model's tokenizer, deterministically
(the user text is sized so the mean conditioned prompt is about --prompt-tokens); 0 keeps the shipped
text. The stretched records are written as AMoPO JSONL and prepared again; that prepare is the one timed.

Peak RSS on CPU includes what glibc's heap keeps after frees: with its default (dynamic) mmap
threshold, freed activation blocks stay in the heap and the heap fragments from step to step, by
different amounts in different arms. ``--malloc-mmap-threshold 131072`` fixes the threshold for
every arm alike, so the peak reflects the memory a step really holds.

Caveats: TRL's CPO computes full-vocabulary logits for every position (its code path), while TRL's DPO
has a tiled LM head on completion positions only (and computes a few extra per-token statistics); TRL
logs every step (its first-step loss is read from the log); the cores may be shared with other jobs,
and the arms run one after the other, so compare within one run.

The targets (printed, never asserted): amopo tokens/s ≥ 1.5× trl-cpo-simpo and ≥ 2× trl-dpo; amopo peak
memory ≤ 0.6× trl-cpo-simpo. Results also go to --json (default bench/results/train_throughput.json). The exit
status is 1 when an arm failed (or ran past --arm-timeout), else 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARMS = ("amopo", "amopo-plain", "simpo", "trl-cpo-simpo", "trl-dpo")
OURS = ("amopo", "amopo-plain", "simpo")
RESULT_MARK = "TRAIN_BENCH_RESULT "
MAX_LENGTH = 1024
TARGETS = (  # (arm, metric, peer, bound, "min" ⇒ ratio ≥ bound, "max" ⇒ ratio ≤ bound)
    ("amopo", "tokens_per_s", "trl-cpo-simpo", 1.5, "min"),
    ("amopo", "tokens_per_s", "trl-dpo", 2.0, "min"),
    ("amopo", "peak_mb", "trl-cpo-simpo", 0.6, "max"),
)


# ---------------------------------------------------------------------------------------------
# Data: prepare, stretch, schedule


def encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def decode(tokenizer, ids: list[int]) -> str:
    """Exact text of ``ids`` (special tokens kept, no clean-up of spaces)."""
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def stretch(tokenizer, text: str, target: int) -> str:
    """``text`` repeated (joined by a space) and cut to ``target`` tokens; unchanged if already as long."""
    ids = encode(tokenizer, text)
    if target <= len(ids):
        return text
    repeated = " ".join([text] * math.ceil(target / max(1, len(ids))))
    return decode(tokenizer, encode(tokenizer, repeated)[:target]).rstrip("\ufffd")


def prompt_overhead(tokenizer, prepared: Path) -> float:
    """Mean tokens a conditioned prompt adds to its user text (template, system turn, dimension prefix)."""
    from amopo.data.tokenize import load_tokenized

    records = [json.loads(line) for line in (prepared / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = load_tokenized(prepared, tokenizer, "train", max_length=MAX_LENGTH, show_progress=False).rows
    extra = [statistics.mean(len(p) for p in row["prompt_ids"]) - len(encode(tokenizer, records[row["id"]]["prompt"]))
             for row in rows]
    return statistics.mean(extra)


def write_stretched(tokenizer, prepared: Path, out: Path, user_tokens: int, response_tokens: int) -> None:
    """AMoPO JSONL copies of the prepared splits with user text and responses stretched."""
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "eval"):
        lines = []
        for line in (prepared / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            record["prompt"] = stretch(tokenizer, record["prompt"], user_tokens)
            for side in ("chosen", "rejected"):
                record[side]["response"] = stretch(tokenizer, record[side]["response"], response_tokens)
            lines.append(json.dumps(record, ensure_ascii=False))
        (out / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def timed_prepare(cfg) -> tuple[float, dict]:
    from amopo.data.prepare import prepare

    start = time.perf_counter()
    manifest = prepare(cfg, echo=None)
    return time.perf_counter() - start, manifest


def prepare_data(model_dir: str, work: Path, prompt_tokens: int, response_tokens: int) -> tuple[Path, dict]:
    """Prepare the benchmark data into ``work``; return its folder and the preprocessing timings."""
    from amopo.data.prepare import PrepareConfig
    from amopo.data.tokenize import load_tokenized
    from amopo.models import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    shipped = work / "shipped"
    cfg = PrepareConfig(data_source="sample", output=str(shipped), base_model=model_dir)
    shipped_s, manifest = timed_prepare(cfg)
    if prompt_tokens or response_tokens:
        user_tokens = round(prompt_tokens - prompt_overhead(tokenizer, shipped)) if prompt_tokens else 0
        write_stretched(tokenizer, shipped, work / "stretched", user_tokens, response_tokens)
        cfg = PrepareConfig(data_source=str(work / "stretched" / "train.jsonl"),
                            eval_source=str(work / "stretched" / "eval.jsonl"), output=str(work / "data"),
                            base_model=model_dir)
        fresh_s, manifest = timed_prepare(cfg)
    else:
        fresh_s = shipped_s
    rerun_s, _ = timed_prepare(cfg)
    start = time.perf_counter()
    split = load_tokenized(cfg.output, tokenizer, "train", max_length=MAX_LENGTH, show_progress=False)
    load_s = time.perf_counter() - start
    pairs = manifest["counts"]["train"] + manifest["counts"]["eval"]
    return Path(cfg.output), {
        "pairs": pairs, "prepare_s": fresh_s, "pairs_per_s": pairs / fresh_s, "prepare_rerun_s": rerun_s,
        "load_tokenized_s": load_s, "load_tokenized_from_cache": split.from_cache,
        "shipped_prepare_s": shipped_s, "dimensions": list(split.dimensions),
    }


def load_rows(data_dir: str | Path, model_dir: str):
    """(tokenizer, rows, dimensions) exactly as the trainer loads them (the token cache)."""
    from amopo.data.tokenize import load_tokenized
    from amopo.models import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    split = load_tokenized(data_dir, tokenizer, "train", max_length=MAX_LENGTH, show_progress=False)
    return tokenizer, split.rows, list(split.dimensions)


def schedule(rows, step: int, pairs: int, seed: int) -> tuple[int, list[dict]]:
    """(epoch, rows) of optimizer ``step``: the trainer's seeded order, one process, no accumulation."""
    from amopo.train.batching import micro_batches

    epoch, micro = micro_batches(len(rows), step, seed=seed, batch_size=pairs, gradient_accumulation_steps=1, world_size=1, rank=0)
    return epoch, [rows[i] for i in micro[0]]


def expanded(rows: list[dict]) -> list[tuple[list[int], list[int], list[int]]]:
    """The K-expanded pairs (x*_k, y_w, y_l) of ``rows``, pair-major, dimension-minor."""
    return [(list(p), list(row["chosen_ids"]), list(row["rejected_ids"])) for row in rows for p in row["prompt_ids"]]


def logical_tokens(rows: list[dict]) -> int:
    return sum(2 * len(p) + len(c) + len(r) for p, c, r in expanded(rows))


# ---------------------------------------------------------------------------------------------
# Child: one arm


def device_and_bf16() -> tuple[str, bool]:
    """The device, and whether ``mixed_precision: auto`` gives bf16 there."""
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.cuda.is_bf16_supported()
    return "cpu", False


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM of /proc/self/status, which starts afresh at exec. (Linux keeps
    ``ru_maxrss`` across fork + exec, so in a child it is never below the parent's peak; it is only the
    fallback where /proc is missing.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_mb(device: str) -> float:
    """Peak memory so far: CUDA allocations on CUDA, else the process's peak RSS."""
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return peak_rss_mb()


def non_embedding_params(model) -> int:
    """Parameters outside the input embedding and output head (tied or not)."""
    skip = {id(m.weight) for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None}
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen and id(p) not in skip:
            total += p.numel()
        seen.add(id(p))
    return total


def disable_dropout(model) -> None:
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def step_durations(ends: list[float], first_start: float) -> list[float]:
    """Seconds of each step from the end timestamps (the first from ``first_start``)."""
    return [e - s for s, e in zip([first_start, *ends[:-1]], ends)]


def simpo_rows(rows: list[dict]) -> list[dict]:
    """One row per K-expanded pair, its conditioned prompt as the plain prompt (our SimPO's input)."""
    out = []
    for row in rows:
        for k, prompt in enumerate(row["prompt_ids"]):
            out.append({"id": row["id"] * len(row["prompt_ids"]) + k, "plain_prompt_ids": prompt,
                        "chosen_ids": row["chosen_ids"], "rejected_ids": row["rejected_ids"]})
    return out


class ForwardTokens:
    """Counts the input_ids of every forward of ``model`` (padding included): the tokens it really runs."""

    def __init__(self, model):
        self.total = 0
        self.handle = model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            self.total += ids.numel()


def per_step(totals: list[int]) -> list[int]:
    """Per-step counts from running totals taken at the end of every step."""
    return [b - a for a, b in zip([0, *totals[:-1]], totals)]


def our_config(arm: str, args, bf16: bool):
    from amopo.train.config import TrainConfig

    fast = arm != "amopo-plain"
    return TrainConfig(objective="simpo" if arm == "simpo" else "amopo", learning_rate=args.lr, seed=args.seed, packing=fast,
                       chunked_logprobs=fast, lean_activations=fast, mixed_precision="bf16" if bf16 else "no")


def executed_tokens(arm: str, args, model, batch: list[dict], pad_id: int) -> int:
    """Tokens of the batch the arm feeds its model for ``batch`` (padding included), from the same collate
    functions: our step's choice of ``collate_packed`` or ``collate``; for TRL, both sequences of every
    K-expanded pair padded to the longest (what CPO's concatenated forward and DPO's collator build)."""
    from amopo.train.batching import collate
    from amopo.train.forward import supports_block_mask
    from amopo.train.packing import collate_packed

    if arm not in OURS:
        return collate(simpo_rows(batch), False, pad_id)["input_ids"].numel()
    cfg = our_config(arm, args, False)
    rows = simpo_rows(batch) if arm == "simpo" else batch
    packed = cfg.packing and supports_block_mask(model)
    return (collate_packed if packed else collate)(rows, cfg.conditioned, pad_id)["input_ids"].numel()


def run_ours(arm: str, args, model, tokenizer, rows, dimensions, device: str, bf16: bool) -> dict:
    """Our step, as amopo/train/loop.py runs it (accelerate's mixed precision included), for warm-up +
    timed steps."""
    import torch
    from accelerate import Accelerator

    from amopo.train.lean_ops import use_lean_activations
    from amopo.train.step import micro_step

    cfg = our_config(arm, args, bf16)
    if cfg.lean_activations:
        use_lean_activations(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    counter = ForwardTokens(model)
    model, optimizer = accelerator.prepare(model, optimizer)
    loaded = memory_mb(device)
    model.train()
    ends, losses, token_counts, forwarded = [], [], [], []
    start = time.perf_counter()
    for step in range(args.warmup_steps + args.steps):
        epoch, batch = schedule(rows, step, args.pairs, args.seed)
        if arm == "simpo":
            batch = simpo_rows(batch)
        per_example, _, ntok = micro_step(cfg, model, batch, dimensions=dimensions, epoch=epoch,
                                          pad_id=tokenizer.pad_token_id, device=accelerator.device)
        loss = per_example.sum() / len(batch)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, cfg.max_grad_norm or float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        ends.append(time.perf_counter())
        losses.append(loss.item())
        token_counts.append(ntok)
        forwarded.append(counter.total)
    return {"durations": step_durations(ends, start), "losses": losses, "step_tokens_reported": token_counts,
            "step_tokens_executed": per_step(forwarded), "loaded_mb": loaded}


def trl_records(tokenizer, args, rows) -> tuple[list[dict], list[tuple]]:
    """TRL text records of every step's K-expanded pairs, in step order, and our ids for each."""
    records, ours = [], []
    for step in range(args.warmup_steps + args.steps):
        for prompt, chosen, rejected in expanded(schedule(rows, step, args.pairs, args.seed)[1]):
            records.append({"prompt": decode(tokenizer, prompt), "chosen": decode(tokenizer, chosen),
                            "rejected": decode(tokenizer, rejected)})
            ours.append((prompt, chosen, rejected))
    return records, ours


def trl_token_check(arm: str, dataset, ours: list[tuple]) -> dict:
    """Compare TRL's tokenised sequences (prompt+chosen, prompt+rejected, prompt length) with ours."""
    if arm == "trl-cpo-simpo":
        theirs = [(ex["chosen_input_ids"], ex["rejected_input_ids"], ex["chosen_labels"].count(-100))
                  for ex in dataset]
    else:
        theirs = [(ex["prompt_ids"] + ex["chosen_ids"], ex["prompt_ids"] + ex["rejected_ids"], len(ex["prompt_ids"]))
                  for ex in dataset]
    expected = [(p + c, p + r, len(p)) for p, c, r in ours]
    return {"pairs": len(expected), "identical": sum(a == b for a, b in zip(theirs, expected)),
            "token_difference": sum(len(a[0]) + len(a[1]) for a in theirs) - sum(len(b[0]) + len(b[1])
                                                                                 for b in expected)}


def step_timer(counters: dict):
    """A TrainerCallback recording when the first step begins, when every step ends, and the running
    totals of ``counters`` (name → ForwardTokens) at each step's end."""
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.start, self.ends = None, []
            self.totals = {name: [] for name in counters}

        def on_step_begin(self, args, state, control, **kwargs):
            if self.start is None:
                self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())
            for name, counter in counters.items():
                self.totals[name].append(counter.total)

    return StepTimer()


def trl_trainer(arm: str, args, model, tokenizer, records: list[dict], batch: int, bf16: bool, output_dir: str):
    """TRL's CPO (loss_type="simpo", cpo_alpha=0) or DPO trainer over ``records`` in order, ``batch`` per step."""
    from datasets import Dataset

    common = dict(output_dir=output_dir, max_steps=args.warmup_steps + args.steps, per_device_train_batch_size=batch,
                  gradient_accumulation_steps=1, learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
                  weight_decay=0.0, bf16=bf16, fp16=False, activation_checkpointing=False,
                  train_sampling_strategy="sequential", max_length=MAX_LENGTH, logging_steps=1, save_strategy="no",
                  report_to="none", disable_tqdm=True, seed=args.seed, dataloader_num_workers=0)
    if arm == "trl-cpo-simpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        config = CPOConfig(loss_type="simpo", cpo_alpha=0.0, beta=0.8, simpo_gamma=2.0, **common)
        return CPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(records),
                          processing_class=tokenizer)
    from trl import DPOConfig, DPOTrainer

    config = DPOConfig(beta=0.1, **common)
    return DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(records), processing_class=tokenizer)


def run_trl(arm: str, args, model, tokenizer, rows, dimensions, device: str, bf16: bool) -> dict:
    """The TRL arm on the K-expanded pairs, via trainer.train()."""
    records, ours = trl_records(tokenizer, args, rows)
    with tempfile.TemporaryDirectory(prefix="amopo-bench-trl-") as output_dir:
        trainer = trl_trainer(arm, args, model, tokenizer, records, args.pairs * len(dimensions), bf16, output_dir)
        check = trl_token_check(arm, trainer.train_dataset, ours)
        counters = {"policy": ForwardTokens(model)}
        reference = getattr(trainer, "ref_model", None)
        if reference is not None:
            counters["reference"] = ForwardTokens(trainer.accelerator.unwrap_model(reference))
        loaded = memory_mb(device)
        timer = step_timer(counters)
        trainer.add_callback(timer)
        trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    out = {"durations": step_durations(timer.ends, timer.start), "losses": losses, "token_check": check,
           "step_tokens_executed": per_step(timer.totals["policy"]), "loaded_mb": loaded}
    if "reference" in timer.totals:
        out["step_tokens_reference"] = per_step(timer.totals["reference"])
    return out


def child_main(args) -> None:
    """Run one arm and print its result as one JSON line."""
    import torch

    from amopo.models import load_model

    torch.set_num_threads(args.threads)
    device, bf16 = device_and_bf16()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tokenizer, rows, dimensions = load_rows(args.data_dir, args.model_dir)
    model = load_model(args.model_dir)
    disable_dropout(model)
    params = non_embedding_params(model)
    expected = [executed_tokens(args.arm, args, model, schedule(rows, s, args.pairs, args.seed)[1],
                                tokenizer.pad_token_id) for s in range(args.warmup_steps + args.steps)]
    if args.arm in OURS:
        model = model.to(device)
        result = run_ours(args.arm, args, model, tokenizer, rows, dimensions, device, bf16)
    else:
        result = run_trl(args.arm, args, model, tokenizer, rows, dimensions, device, bf16)
    result.update(arm=args.arm, peak_mb=memory_mb(device), peak_rss_mb=peak_rss_mb(),
                  non_embedding_params=params, device=device, bf16=bf16, threads=torch.get_num_threads(),
                  step_tokens_executed_expected=expected)
    print(RESULT_MARK + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------
# Parent


MFU_FLAG = "> 100% (check the peak)"
MFU_DEFINITION = ("mfu = executed_flops / seconds / peak (a string flag above 100%); logical_work_rate = "
                  "logical_flops / seconds / peak; logical_flops = 6 N logical_tokens, executed_flops = 6 N "
                  "executed_tokens (padding included), + 2 N per token of DPO's reference forward, N = "
                  "non-embedding parameters, no attention term; peak = best of the matmul trials")


def matmul_trials(threads: int, n: int, trials: int) -> dict:
    """FLOP/s of ``trials`` timed n×n matmuls in the arms' dtype (fp32 on CPU, bf16 on CUDA), after two
    untimed warm-up products; on CUDA each trial times ``reps`` products between synchronisations."""
    import torch

    torch.set_num_threads(threads)
    device, bf16 = device_and_bf16()
    dtype = torch.bfloat16 if bf16 else torch.float32
    reps = 10 if device == "cuda" else 1
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(2):
        a @ b
    flops = []
    for _ in range(trials):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        flops.append(2 * n**3 * reps / (time.perf_counter() - start))
    del a, b
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"device": device, "dtype": str(dtype).removeprefix("torch."), "n": n, "reps": reps, "flops": flops}


def run_child(arm: str, args, model_dir: str, data_dir: Path, log: Path) -> dict:
    """Run ``arm`` in a fresh process (its output kept in ``log``); its result, or {"error": ...}."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--arm", arm, "--model-dir", model_dir,
           "--data-dir", str(data_dir), "--pairs", str(args.pairs), "--warmup-steps", str(args.warmup_steps),
           "--steps", str(args.steps), "--threads", str(args.threads), "--learning-rate", str(args.lr), "--seed", str(args.seed)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    env.setdefault("CUDA_VISIBLE_DEVICES", "0")  # one GPU for every arm (HF's Trainer would take them all)
    if args.malloc_mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.malloc_mmap_threshold)
    try:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              timeout=args.arm_timeout or None)
        output, error = proc.stdout, f"exit code {proc.returncode}"
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        error = f"timed out after {args.arm_timeout} s"
    log.write_text(output)
    for line in output.splitlines():
        if line.startswith(RESULT_MARK):
            return {**json.loads(line[len(RESULT_MARK):]), "log": str(log)}
    return {"arm": arm, "error": error, "output_tail": output[-3000:], "log": str(log)}


def summarise(result: dict, step_tokens: list[int], warmup: int) -> dict:
    """Timed-step metrics of one arm's raw result (FLOPs and MFU come later: see ``flop_metrics``)."""
    timed = result["durations"][warmup:]
    window = slice(warmup, warmup + len(timed))
    tokens = step_tokens[window]
    observed = result.get("step_tokens_executed") or []
    expected = result.get("step_tokens_executed_expected") or []
    executed = observed if any(observed) else expected
    seconds = sum(timed)
    return {"s_per_step": statistics.median(timed), "seconds": seconds, "tokens_per_s": sum(tokens) / seconds,
            "logical_tokens": sum(tokens), "executed_tokens": sum(executed[window]),
            "reference_tokens": sum((result.get("step_tokens_reference") or [])[window]),
            "executed_matches_collate": observed == expected if observed and expected else None,
            "train_minus_loaded_mb": result["peak_mb"] - result["loaded_mb"],
            "first_loss": result["losses"][0] if result["losses"] else None,
            "tokens_match": result.get("step_tokens_reported", step_tokens) == step_tokens}


def flop_metrics(r: dict, peak_flops: float) -> dict:
    """Logical and executed FLOPs of the timed steps, MFU (a flag above 100%) and the logical-work rate."""
    n = r["non_embedding_params"]
    logical = (6 * n + (2 * n if r["arm"] == "trl-dpo" else 0)) * r["logical_tokens"]
    executed = 6 * n * r["executed_tokens"] + 2 * n * r["reference_tokens"]
    mfu = executed / r["seconds"] / peak_flops
    return {"logical_flops": logical, "executed_flops": executed, "executed_vs_logical_tokens":
            r["executed_tokens"] / r["logical_tokens"], "executed_flops_per_s": executed / r["seconds"],
            "mfu": MFU_FLAG if mfu > 1 else mfu, "logical_work_rate": logical / r["seconds"] / peak_flops}


def pct(value) -> str:
    return value if isinstance(value, str) else f"{value:.1%}"


def ratio(results: dict, arm: str, peer: str, key: str) -> float | None:
    a, b = results.get(arm, {}), results.get(peer, {})
    return a[key] / b[key] if key in a and key in b and b[key] else None


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def print_report(results: dict, meta: dict) -> list[str]:
    """Print the Markdown table, the checks and the target lines; return the target lines."""
    mem = "peak GPU MB" if meta["device"] == "cuda" else "peak RSS MB"
    print(f"\n| arm | s/step | tokens/s | {mem} | loaded MB | train − loaded MB | executed ÷ logical tokens | MFU "
          f"| logical-work rate | tok/s vs trl-cpo-simpo | tok/s vs trl-dpo | peak mem vs trl-cpo-simpo |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for arm, r in results.items():
        if "error" in r:
            print(f"| {arm} | failed: {r['error']} | | | | | | | | | | |")
            continue
        print(f"| {arm} | {r['s_per_step']:.2f} | {r['tokens_per_s']:.0f} | {r['peak_mb']:.0f} | "
              f"{r['loaded_mb']:.0f} | {r['train_minus_loaded_mb']:.0f} | {r['executed_vs_logical_tokens']:.2f} | "
              f"{pct(r['mfu'])} | {pct(r['logical_work_rate'])} | "
              f"{fmt(ratio(results, arm, 'trl-cpo-simpo', 'tokens_per_s'), '.2f', '×')} | "
              f"{fmt(ratio(results, arm, 'trl-dpo', 'tokens_per_s'), '.2f', '×')} | "
              f"{fmt(ratio(results, arm, 'trl-cpo-simpo', 'peak_mb'), '.2f', '×')} |")
    peak = meta["peak"]
    print(f"\nMFU = executed FLOPs/s ÷ peak; logical-work rate = logical-token FLOPs/s ÷ peak (counts work "
          f"packing saves as done); peak = best of {len(peak['trials'])} trials of a {peak['n']}×{peak['n']} "
          f"{peak['dtype']} matmul on {peak['device']} (before and after the arms): "
          f"{peak['flops'] / 1e9:.1f} GFLOP/s (slowest trial {min(peak['trials']) / 1e9:.1f})")
    print("\nchecks:")
    for arm, r in results.items():
        if "error" in r:
            continue
        line = f"  {arm}: first-step loss {fmt(r['first_loss'], '.6f')}"
        if "token_check" in r:
            c = r["token_check"]
            line += (f"; TRL tokenisation identical to ours for {c['identical']}/{c['pairs']} K-expanded pairs "
                     f"(token difference {c['token_difference']:+d})")
        else:
            line += f"; step tokens {'match' if r['tokens_match'] else 'DIFFER from'} the parent's count"
        match = r["executed_matches_collate"]
        line += ("; executed tokens " + {True: "match", False: "DIFFER from", None: "not compared with"}[match]
                 + " the collated batch")
        print(line)
    print()
    lines = []
    for arm, key, peer, bound, kind in TARGETS:
        value = ratio(results, arm, peer, key)
        verdict = "n/a" if value is None else ("PASS" if (value >= bound if kind == "min" else value <= bound)
                                                else "MISS")
        what = "tokens/s" if key == "tokens_per_s" else "peak memory"
        lines.append(f"target: {arm} {what} {'≥' if kind == 'min' else '≤'} {bound}× {peer}: "
                     f"{fmt(value, '.2f', '×')} {verdict}")
        print(lines[-1])
    return lines


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny random model built offline, 2 pairs per step, 1 timed step (a quick check)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--pairs", type=int, default=None, help="pairs per optimizer step (default 4; tiny 2)")
    parser.add_argument("--warmup-steps", type=int, default=1, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=None, help="timed optimizer steps (default 2; tiny 1)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--learning-rate", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--prompt-tokens", type=int, default=130,
                        help="stretch user texts so the mean conditioned prompt has about this many tokens "
                             "(0: as shipped)")
    parser.add_argument("--response-tokens", type=int, default=100,
                        help="stretch every response to this many tokens (0: as shipped)")
    parser.add_argument("--malloc-mmap-threshold", type=int, default=0, metavar="BYTES",
                        help="glibc's MALLOC_MMAP_THRESHOLD_ for every arm's process (e.g. 131072): large blocks "
                             "then come from mmap and go back to the system when freed, so peak RSS measures "
                             "live memory rather than heap fragmentation (costs speed in every arm); 0: glibc's "
                             "default, a threshold that grows with the blocks freed")
    parser.add_argument("--matmul-size", type=int, default=None,
                        help="n of the n×n matmul that measures the peak (default 2048 on CPU, 8192 on CUDA)")
    parser.add_argument("--matmul-trials", type=int, default=7,
                        help="timed matmul trials before the arms, and as many after; the peak is the best")
    parser.add_argument("--arm-timeout", type=float, default=0, metavar="S",
                        help="stop an arm's process after S seconds and report it failed (0: no limit)")
    parser.add_argument("--json", default=None,
                        help="results file (default bench/results/train_throughput.json; tiny: ..._tiny.json)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.pairs = args.pairs or (2 if args.tiny else 4)
    args.steps = args.steps if args.steps is not None else (1 if args.tiny else 2)
    name = "train_throughput_tiny.json" if args.tiny else "train_throughput.json"
    args.json = args.json or str(ROOT / "bench" / "results" / name)
    return args


def main() -> None:
    args = parse_args()
    if args.child:
        child_main(args)
        return
    import torch

    from amopo.models import resolve_model
    from amopo.tiny import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="amopo-bench-train-"))
    model_dir = str(build_tiny_model(work / "tiny-model")) if args.tiny else resolve_model(args.model)
    torch.set_num_threads(args.threads)
    print(f"model {'tiny (random)' if args.tiny else args.model} ({model_dir}); {args.pairs} pairs per step; "
          f"{args.warmup_steps} warm-up + {args.steps} timed steps; {os.cpu_count()} CPUs, torch threads "
          f"{args.threads}", flush=True)

    data_dir, prep = prepare_data(model_dir, work, args.prompt_tokens, args.response_tokens)
    _, rows, dimensions = load_rows(data_dir, model_dir)
    steps = [schedule(rows, s, args.pairs, args.seed)[1] for s in range(args.warmup_steps + args.steps)]
    step_tokens = [logical_tokens(b) for b in steps]
    shape = expanded([row for b in steps for row in b])
    mean = {name: statistics.mean(len(t[i]) for t in shape) for i, name in enumerate(("prompt", "chosen", "rejected"))}
    print(f"prepare: {prep['pairs']} pairs in {prep['prepare_s']:.2f} s ({prep['pairs_per_s']:.0f} pairs/s); "
          f"re-run {prep['prepare_rerun_s']:.2f} s; trainer's load of the tokenised rows "
          f"{prep['load_tokenized_s']:.3f} s (from cache: {prep['load_tokenized_from_cache']})")
    print(f"K = {len(dimensions)} ({', '.join(dimensions)}); {args.pairs * len(dimensions)} K-expanded pairs per "
          f"step; mean tokens: prompt x*_k {mean['prompt']:.0f}, chosen {mean['chosen']:.0f}, rejected "
          f"{mean['rejected']:.0f}; logical tokens per step {step_tokens}", flush=True)

    device, bf16 = device_and_bf16()
    n = args.matmul_size or (8192 if device == "cuda" else 2048)
    before = matmul_trials(args.threads, n, args.matmul_trials)
    print(f"matmul peak ({before['dtype']}, {device}, before the arms): best of {args.matmul_trials} trials "
          f"{max(before['flops']) / 1e9:.1f} GFLOP/s", flush=True)

    results = {}
    for arm in args.arms:
        start = time.perf_counter()
        raw = run_child(arm, args, model_dir, data_dir, work / f"{arm}.log")
        if "error" not in raw:
            raw.update(summarise(raw, step_tokens, args.warmup_steps))
            print(f"  done: {arm} in {time.perf_counter() - start:.0f} s: {raw['s_per_step']:.2f} s/step, "
                  f"{raw['tokens_per_s']:.0f} tokens/s", flush=True)
        else:
            print(f"  FAILED: {arm} ({raw['error']}):\n{raw['output_tail']}", flush=True)
        results[arm] = raw

    after = matmul_trials(args.threads, n, args.matmul_trials)
    trials = before["flops"] + after["flops"]
    peak = {**{k: before[k] for k in ("device", "dtype", "n", "reps")}, "flops": max(trials), "trials": trials,
            "trials_before": before["flops"], "trials_after": after["flops"]}
    for r in results.values():
        if "error" not in r:
            r.update(flop_metrics(r, peak["flops"]))
    targets = print_report(results, {"device": device, "peak": peak})
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    ratios = {f"{arm}/{key}_vs_{peer}": ratio(results, arm, peer, key) for arm in results
              for peer in ("trl-cpo-simpo", "trl-dpo") for key in ("tokens_per_s", "peak_mb", "train_minus_loaded_mb")
              if arm != peer}
    out.write_text(json.dumps({
        "config": {k: v for k, v in vars(args).items() if k not in ("child", "arm", "model_dir", "data_dir")},
        "model_dir": model_dir, "device": device, "bf16": bf16, "cpus": os.cpu_count(),
        "matmul_peak_flops": peak["flops"], "matmul_peak": peak, "mfu_definition": MFU_DEFINITION,
        "preprocessing": prep, "dimensions": dimensions, "step_tokens": step_tokens,
        "mean_tokens": mean, "arms": results, "ratios": ratios, "targets": targets,
    }, indent=2) + "\n")
    print(f"\nresults: {out}; child logs: {work}/<arm>.log")
    if any("error" in r for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
