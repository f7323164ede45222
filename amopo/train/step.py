"""One micro-batch: forward the 2·K sequences, apply the objective, return per-example losses.

By default the K prompts of a pair are each computed once for both responses (shared-prompt
packing, :mod:`amopo.train.packing`) and the output head runs chunk by chunk on response
positions only (:mod:`amopo.objectives.chunked_logprobs`); both are exact rewrites of the plain
path (``packing=False, chunked_logprobs=False``), which tests/test_fast_path.py checks.

Per-example losses (not a mean) let the loop scale by the exact number of pairs in the optimizer
step, so gradient accumulation and data parallelism give the same update as one big batch.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from amopo.objectives import (
    adaptive_weights,
    amopo_loss,
    average_logprob,
    dpo_loss,
    example_noise,
    modpo_loss,
    response_token_stats,
    sft_loss,
    simpo_loss,
)
from amopo.objectives.chunked_logprobs import chunked_token_logprobs, segment_stats
from amopo.train.batching import IGNORE_INDEX, collate
from amopo.train.config import TrainConfig
from amopo.train.forward import (attention_mask_for, bypass_fallback_reason, grouped_kv_on_cpu, head_bypassed,
                                 output_head, supports_block_mask, unwrap)
from amopo.train.modpo import margin_gaps, margin_spec
from amopo.train.packing import collate_packed, is_packed


def sequence_stats(model, batch: dict[str, torch.Tensor], *, chunked: bool = True, chunk_rows: int = 0):
    """SeqStats of the response tokens of every sequence in ``batch``.

    ``batch`` is either the plain right-padded layout of :func:`amopo.train.batching.pad_sequences`
    or the shared-prompt packed layout of :func:`amopo.train.packing.pack_groups`. With ``chunked``
    (and a plain linear output head) the head and log-softmax run chunk by chunk on the response
    positions only, from the final hidden states; otherwise full logits are computed, for the plain
    layout only on the window from the shortest prompt's last token on (``logits_to_keep``). Both
    give the same statistics and gradients.
    """
    head = output_head(model) if chunked else None
    if is_packed(batch):
        return _packed_stats(model, batch, head, chunk_rows)
    if head is not None:
        return _padded_stats_chunked(model, batch, head, chunk_rows)
    labels = batch["labels"]
    first_response = (labels != IGNORE_INDEX).float().argmax(dim=1).min().item()
    keep = labels.shape[1] - max(int(first_response) - 1, 0)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
                logits_to_keep=keep)
    return response_token_stats(out.logits, labels[:, labels.shape[1] - keep:])


# Response tokens of the training row that the head bypass is checked on: enough to show a logit
# transform, few enough that the model's full logits over them stay small.
_CHECK_RESPONSE_TOKENS = 64


def head_bypass_problem(model, row: dict) -> str | None:
    """Why log-probs cannot come from the head bypass on ``model`` (None: they can), checking it on
    ``row``'s chosen response (its first 64 tokens) after the plain prompt
    (:func:`amopo.train.forward.check_head_bypass`); later calls of :func:`sequence_stats` follow
    the verdict."""
    prompt, response = list(row["plain_prompt_ids"]), list(row["chosen_ids"][:_CHECK_RESPONSE_TOKENS])
    ids = torch.tensor([prompt + response])
    labels = torch.tensor([[IGNORE_INDEX] * len(prompt) + response])
    return bypass_fallback_reason(model, ids, labels)


def _token_stats(model, head, inputs: dict, predict_index, targets, seq_index, num_seqs: int, chunk_rows: int):
    """Run ``model`` on ``inputs``; per-sequence stats of ``targets`` predicted at ``predict_index``."""
    if head is None:
        logits = model(**inputs, use_cache=False).logits
        rows = logits.reshape(-1, logits.shape[-1]).index_select(0, predict_index).float()
        logp = torch.log_softmax(rows, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    else:
        with head_bypassed(head) as linear:
            hidden = model(**inputs, use_cache=False).logits
        rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, predict_index)
        logp = chunked_token_logprobs(rows, linear.weight, targets, linear.bias, chunk_rows=chunk_rows or None)
    return segment_stats(logp, seq_index, num_seqs)


def _padded_stats_chunked(model, batch, head, chunk_rows: int):
    labels = batch["labels"]
    n, t = labels.shape
    target = labels[:, 1:]
    row, col = (target != IGNORE_INDEX).nonzero(as_tuple=True)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    return _token_stats(model, head, inputs, row * t + col, target[row, col], row, n, chunk_rows)


def _packed_stats(model, batch, head, chunk_rows: int):
    if not supports_block_mask(model):
        raise ValueError("shared-prompt packing needs sdpa, eager or flex_attention attention; "
                         "disable packing for this model")
    dtype = next(unwrap(model).parameters()).dtype
    mask = attention_mask_for(model, batch["segment_group"], batch["segment_kind"], dtype)
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "attention_mask": mask}
    return _token_stats(model, head, inputs, batch["predict_index"], batch["target_ids"], batch["seq_index"],
                        int(batch["num_seqs"]), chunk_rows)


def _split(t: torch.Tensor, b: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[2·B·K] → chosen [B, K], rejected [B, K]."""
    return t[: b * k].view(b, k), t[b * k:].view(b, k)


def micro_step(cfg: TrainConfig, model, rows: Sequence[dict], *, dimensions: Sequence[str], epoch: int,
               pad_id: int, device,
               reference_logps: Callable | None = None) -> tuple[torch.Tensor, dict[str, float], int]:
    """Return (per-example losses [B] with grad, metric sums over the B examples, logical tokens).

    ``reference_logps(rows, batch) -> logp_sum [2·B]`` gives the frozen reference's response log-probs,
    chosen then rejected (dpo/modpo only; :mod:`amopo.train.reference`).
    """
    b = len(rows)
    k = len(dimensions) if cfg.conditioned else 1
    packed = cfg.packing and supports_block_mask(model)
    batch = collate_packed(rows, cfg.conditioned, pad_id) if packed else collate(rows, cfg.conditioned, pad_id)
    batch = {n: t.to(device) for n, t in batch.items()}
    with grouped_kv_on_cpu(device):
        stats = sequence_stats(model, batch, chunked=cfg.chunked_logprobs, chunk_rows=cfg.logprob_chunk_rows)
    beta = cfg.effective_beta
    sums: dict[str, float] = {}

    logp_w, logp_l = _split(stats.logp_sum, b, k)
    avg = average_logprob(stats)
    avg_w, avg_l = _split(avg, b, k)

    if cfg.objective in ("amopo", "simpo"):
        if cfg.objective == "amopo":
            mu_w, mu_l = _split(stats.prob_mean, b, k)
            sd_w, sd_l = _split(stats.prob_std, b, k)
            noise = example_noise([r["id"] for r in rows], k, seed=cfg.seed, epoch=epoch).to(device)
            alpha = adaptive_weights(cfg.weighting, mu_w=mu_w, sd_w=sd_w, mu_l=mu_l, sd_l=sd_l, noise=noise,
                                     flatten=cfg.flatten_softmax)
            per_example, per_dim = amopo_loss(avg_w, avg_l, alpha, beta=beta, gamma=cfg.gamma)
            for i, name in enumerate(dimensions):
                sums[f"loss/{name}"] = per_dim[:, i].detach().sum().item()
                sums[f"alpha/{name}"] = alpha[:, i].sum().item()
        else:
            per_example = simpo_loss(avg_w[:, 0], avg_l[:, 0], beta=beta, gamma=cfg.gamma)
        reward_w, reward_l = beta * avg_w.detach(), beta * avg_l.detach()
    else:
        if reference_logps is None:
            raise ValueError(f"loss '{cfg.objective}' needs a reference model")
        with torch.no_grad():
            ref_w, ref_l = _split(reference_logps(rows, batch), b, k)
        if cfg.objective == "dpo":
            per_example = dpo_loss(logp_w[:, 0], logp_l[:, 0], ref_w[:, 0], ref_l[:, 0], beta=beta)
        else:
            spec = margin_spec(cfg.modpo_objective, cfg.modpo_margin, cfg.modpo_weight, dimensions)
            per_example = modpo_loss(logp_w[:, 0], logp_l[:, 0], ref_w[:, 0], ref_l[:, 0],
                                     margin_gaps(rows, dimensions, spec).to(device), beta=beta,
                                     weight=cfg.modpo_weight)
        reward_w = beta * (logp_w - ref_w).detach()
        reward_l = beta * (logp_l - ref_l).detach()

    if cfg.sft_weight:
        per_example = per_example + cfg.sft_weight * sft_loss(avg_w.mean(dim=1))

    names = list(dimensions) if cfg.conditioned else ["plain"]
    for i, name in enumerate(names):
        margin = reward_w[:, i] - reward_l[:, i]
        sums[f"rewards/chosen/{name}"] = reward_w[:, i].sum().item()
        sums[f"rewards/rejected/{name}"] = reward_l[:, i].sum().item()
        sums[f"margin/{name}"] = margin.sum().item()
        sums[f"accuracy/{name}"] = (margin > 0).float().sum().item()
    sums["loss"] = per_example.detach().sum().item()
    return per_example, sums, int(batch["num_tokens"].item())
