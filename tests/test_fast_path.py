"""The fast path (shared-prompt packing + chunked log-probs from hidden states) is an exact rewrite
of the plain path: same statistics, losses and parameter gradients in fp32 (within 1e-5)."""

from __future__ import annotations

import math

import pytest
import torch

from amopo.objectives import response_token_stats
from amopo.objectives.chunked_logprobs import chunked_token_logprobs, segment_stats
from amopo.train.batching import collate, pad_sequences
from amopo.train.config import TrainConfig
from amopo.train.lean_ops import use_lean_activations
from amopo.train.packing import block_attention_mask, collate_packed, pack_groups, pack_rows, Group
from amopo.train.step import micro_step, sequence_stats
from tests.helpers.token_rows import DIMS, token_rows

TOL = 1e-5


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from amopo.models import load_model

    return load_model(str(tiny_model_dir))


# ------------------------------------------------------------------ chunked log-probs


def test_chunked_logprobs_and_gradients_match_log_softmax():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(11, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(13, 6, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(13, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 13, (11,), generator=g)
    expected = torch.log_softmax(h @ w.T + b, -1).gather(-1, y[:, None]).squeeze(-1)
    got = chunked_token_logprobs(h, w, y, b, chunk_rows=4)
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), expected, atol=1e-6)

    # The recomputing backward gives the gradients of the plain expression.
    grads = torch.autograd.grad((got * torch.arange(11.0)).sum(), (h, w, b))
    ref = torch.autograd.grad((expected * torch.arange(11.0, dtype=torch.float64)).sum(), (h, w, b))
    for a, e in zip(grads, ref):
        assert torch.allclose(a, e, atol=1e-5), (a - e).abs().max()


def test_segment_stats_equal_the_padded_statistics():
    logits = torch.randn(3, 7, 11)
    labels = torch.tensor([[-100, -100, 4, 5, 6, -100, -100], [-100, 1, -100, -100, -100, -100, -100],
                           [-100, 2, 3, 4, 5, 6, 7]])
    plain = response_token_stats(logits, labels)
    target = labels[:, 1:]
    row, col = (target != -100).nonzero(as_tuple=True)
    logp = torch.log_softmax(logits[:, :-1], -1)[row, col].gather(-1, target[row, col, None]).squeeze(-1)
    fast = segment_stats(logp, row, 3)
    for a, b in zip(plain, fast):
        assert torch.allclose(a, b, atol=1e-6, equal_nan=True)
    assert math.isnan(fast.prob_std[1].item())  # one response token: std undefined, as in the plain path


# ------------------------------------------------------------------ packing


def test_pack_rows_first_fit_decreasing():
    assert pack_rows([5, 3, 2, 4, 1]) == [[0], [3, 4], [1, 2]]
    assert pack_rows([2, 2, 2], capacity=4) == [[0, 1], [2]]
    assert pack_rows([]) == []


def test_block_mask_shares_the_prompt_and_separates_responses():
    batch = pack_groups([Group([1, 2], [[3, 4], [5]], [0, 1]), Group([6], [[7], [8]], [2, 3])], pad_id=0)
    # Longest group is 5 tokens: group 0 alone in row 0, group 1 (3 tokens) in row 1, then padding.
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 2], [0, 1, 1, 0, 0]]
    mask = block_attention_mask(batch["segment_group"], batch["segment_kind"])[:, 0].int().tolist()
    assert mask[0] == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 0, 0, 1]]
    assert mask[1][:3] == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 0, 1, 0, 0]]
    assert all(mask[1][i][i] for i in range(5))  # padding attends to itself: no empty softmax rows
    # Targets: 3 ← prompt end (col 1), 4 ← 3, 5 ← prompt end; 7 and 8 ← prompt end of group 1.
    assert batch["predict_index"].tolist() == [1, 2, 1, 5, 5]
    assert batch["target_ids"].tolist() == [3, 4, 5, 7, 8]
    assert batch["seq_index"].tolist() == [0, 0, 1, 2, 3]
    assert int(batch["num_tokens"]) == (2 + 2) + (2 + 1) + (1 + 1) + (1 + 1)  # prompt counted per sequence


@pytest.mark.parametrize("conditioned", [True, False])
def test_packed_batch_counts_the_same_logical_tokens(conditioned):
    rows = token_rows(3)
    assert int(collate_packed(rows, conditioned, 0)["num_tokens"]) == int(collate(rows, conditioned, 0)["num_tokens"])


# ------------------------------------------------------------------ statistics on the model


@pytest.mark.parametrize("conditioned", [True, False], ids=["conditioned", "plain"])
@pytest.mark.parametrize("chunked,packed", [(True, False), (False, True), (True, True)])
def test_sequence_stats_and_gradients_match_the_plain_path(model, conditioned, chunked, packed):
    rows = token_rows(4)

    def run(batch, **kw):
        stats = sequence_stats(model, batch, **kw)
        model.zero_grad(set_to_none=True)
        avg = stats.logp_sum / stats.n_tokens
        (avg * torch.linspace(-1, 1, avg.numel())).sum().backward()
        return stats, {n: p.grad.clone() for n, p in model.named_parameters()}

    plain, g_plain = run(collate(rows, conditioned, 0), chunked=False)
    batch = collate_packed(rows, conditioned, 0) if packed else collate(rows, conditioned, 0)
    fast, g_fast = run(batch, chunked=chunked, chunk_rows=5)
    for a, b in zip(plain, fast):
        assert torch.allclose(a, b, atol=TOL, rtol=TOL, equal_nan=True), (a - b).abs().max()
    for name in g_plain:
        assert torch.allclose(g_plain[name], g_fast[name], atol=TOL, rtol=TOL), name


def test_chunked_stats_on_the_padded_layout_equal_full_logits(model):
    batch = pad_sequences([([5, 6, 7, 8, 9, 10], [11, 12, 13]), ([5, 6, 7], [20, 21, 22, 23, 24]), ([1, 2, 3, 4], [30])],
                          pad_id=0)
    full = response_token_stats(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                batch["labels"])
    fast = sequence_stats(model, batch, chunk_rows=2)
    for a, b in zip(full, fast):
        assert torch.allclose(a, b, atol=1e-6, equal_nan=True)
    assert type(model.lm_head) is torch.nn.Linear  # the head swap is undone


# ------------------------------------------------------------------ losses and gradients per objective


def _step(model, cfg: TrainConfig, rows, reference=None):
    ref_fn = (lambda rows, batch: sequence_stats(reference, batch).logp_sum) if reference is not None else None
    model.zero_grad(set_to_none=True)
    per_example, sums, ntok = micro_step(cfg, model, rows, dimensions=DIMS, epoch=0, pad_id=0, device="cpu",
                                         reference_logps=ref_fn)
    per_example.sum().backward()
    return per_example.detach(), sums, ntok, {n: p.grad.clone() for n, p in model.named_parameters()
                                              if p.grad is not None}


OBJECTIVES = [
    dict(objective="amopo"),
    dict(objective="amopo", weighting="mean", flatten_softmax=True, sft_weight=0.3),
    dict(objective="simpo"),
    dict(objective="simpo", sft_weight=0.5),
    dict(objective="dpo"),
    dict(objective="modpo", modpo_weight=0.6),
]


@pytest.mark.parametrize("overrides", OBJECTIVES, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_fast_path_losses_and_gradients_equal_the_plain_path(model, overrides):
    import copy

    rows = token_rows(5)
    reference = None
    if overrides["objective"] in ("dpo", "modpo"):
        # A reference that differs from the policy, so the DPO margins are not all zero.
        reference = copy.deepcopy(model).requires_grad_(False)
        with torch.no_grad():
            for p in reference.parameters():
                p.add_(0.01 * torch.randn_like(p))
    plain_cfg = TrainConfig(packing=False, chunked_logprobs=False, lean_activations=False, **overrides)
    fast_cfg = TrainConfig(logprob_chunk_rows=7, **overrides)
    lean = copy.deepcopy(model)
    assert use_lean_activations(lean) == {"mlp": 2, "rms_norm": 5}   # as the loop does for fast_cfg
    loss_p, sums_p, ntok_p, grads_p = _step(model, plain_cfg, rows, reference)
    loss_f, sums_f, ntok_f, grads_f = _step(lean, fast_cfg, rows, reference)
    assert ntok_p == ntok_f
    assert torch.allclose(loss_p, loss_f, atol=TOL, rtol=TOL), (loss_p - loss_f).abs().max()
    assert sums_p.keys() == sums_f.keys()
    for key in sums_p:
        assert math.isclose(sums_p[key], sums_f[key], abs_tol=1e-4, rel_tol=TOL), key
    for name, g in grads_p.items():
        assert torch.allclose(g, grads_f[name], atol=TOL, rtol=TOL), f"{name}: {(g - grads_f[name]).abs().max()}"
    assert any(g.abs().sum() > 0 for g in grads_f.values())


def test_eager_attention_takes_the_block_mask_as_a_float_mask(tiny_model_dir):
    from amopo.models import load_model

    model = load_model(str(tiny_model_dir))
    rows = token_rows(3)
    sdpa = sequence_stats(model, collate_packed(rows, True, 0))
    model = load_model(str(tiny_model_dir), attn_implementation="eager")   # as `amopo train --attention eager`
    assert model.config._attn_implementation == "eager"
    eager = sequence_stats(model, collate_packed(rows, True, 0))
    plain = sequence_stats(model, collate(rows, True, 0), chunked=False)
    for a, b, c in zip(sdpa, eager, plain):
        assert torch.allclose(a, b, atol=TOL, equal_nan=True)
        assert torch.allclose(c, b, atol=TOL, equal_nan=True)


def test_lora_model_fast_path_matches(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from amopo.models import load_model

    model = get_peft_model(load_model(str(tiny_model_dir)),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    rows = token_rows(3)
    _, _, _, g_plain = _step(model, TrainConfig(packing=False, chunked_logprobs=False), rows)
    _, _, _, g_fast = _step(model, TrainConfig(), rows)
    lora = [n for n, p in model.named_parameters() if p.requires_grad]
    assert lora
    for name in lora:
        assert torch.allclose(g_plain[name], g_fast[name], atol=TOL, rtol=TOL), name


def test_lean_swiglu_and_rms_norm_have_exact_gradients_in_double():
    from amopo.train.lean_ops import _RMSNorm, _SwiGLUDown

    g = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    u = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_SwiGLUDown.apply, (g, u, w, b))
    assert torch.autograd.gradcheck(_SwiGLUDown.apply, (g, u, w, None))
    x = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    scale = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, c: _RMSNorm.apply(a, c, 1e-6), (x, scale))


def test_lean_activations_leave_lora_wrapped_projections_alone(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from amopo.models import load_model

    model = get_peft_model(load_model(str(tiny_model_dir)),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["down_proj", "q_proj"]))
    assert use_lean_activations(model) == {"mlp": 0, "rms_norm": 5}



def test_grouped_kv_heads_on_cpu_give_the_same_stats_and_gradients():
    """A model with 4 query heads sharing 2 key/value heads: SDPA on the grouped heads (as micro_step
    runs it on CPU) against transformers' repeated heads."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from amopo.train.forward import grouped_kv_on_cpu

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0))
    batch = collate_packed(token_rows(3), True, 0)

    def run(grouped: bool):
        model.zero_grad(set_to_none=True)
        if grouped:
            with grouped_kv_on_cpu("cpu"):
                stats = sequence_stats(model, batch)
        else:
            stats = sequence_stats(model, batch)
        stats.logp_sum.sum().backward()
        return stats, {n: p.grad.clone() for n, p in model.named_parameters()}

    (repeated, grads_r), (grouped, grads_g) = run(False), run(True)
    for a, b in zip(repeated, grouped):
        assert torch.allclose(a, b, atol=TOL, equal_nan=True)
    for name, g in grads_r.items():
        assert torch.allclose(g, grads_g[name], atol=TOL), name
    import os
    assert "TRANSFORMERS_SDPA_FORCE_GQA" not in os.environ   # the switch is only on inside the block


def test_compile_wraps_every_decoder_block_once(tiny_model_dir):
    from amopo.models import load_model
    from amopo.train.forward import compile_decoder_layers

    model = load_model(str(tiny_model_dir))
    layers = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
    assert compile_decoder_layers(model) == len(layers) == 2
    assert all(layer._compiled_call_impl is not None for layer in layers)
    assert compile_decoder_layers(model) == 0   # a second call (a resumed loop, say) changes nothing
