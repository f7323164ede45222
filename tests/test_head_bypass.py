"""The head bypass (log-probs from the final hidden states and the output head, never the model's
full logits: :mod:`amopo.train.forward`) is used only where it gives the model's own log-probs.
That is checked on the model itself, so transforms of the logits after the head that no list of
config fields names (a softcap kept in a nested ``text_config``) fall back to the model's logits,
and the run says so, while a plain Llama keeps the bypass."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from amopo.objectives import response_token_stats
from amopo.train.batching import pad_sequences
from amopo.train import forward
from amopo.train.forward import output_head
from amopo.train.step import sequence_stats
from tests.helpers.training import train_config

TOL = 1e-5
SOFTCAP = 0.5   # small, so the tiny model's logits (about ±1) are visibly capped


def _batch(vocab: int):
    seqs = [([5, 6, 7, 8, 9], [11, 12, 13, 14]), ([5, 6], [20, 21, 22]), ([3, 4, 5, 6], [30])]
    return pad_sequences([([t % vocab for t in p], [t % vocab for t in r]) for p, r in seqs], pad_id=0)


def _own_logp_sum(model, batch) -> torch.Tensor:
    """Σ log_softmax(model(...).logits)[response tokens] per sequence: the reference value."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return response_token_stats(logits, batch["labels"]).logp_sum


def _gemma4_config(vocab: int, softcap: float | None):
    """A tiny text-only Gemma 4 whose final-logit softcap lives in ``config.text_config`` only."""
    from transformers import Gemma4Config

    text = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=8, hidden_size_per_layer_input=0, vocab_size_per_layer_input=vocab,
                final_logit_softcapping=softcap, sliding_window=16,
                layer_types=["sliding_attention", "full_attention"], max_position_embeddings=512,
                tie_word_embeddings=False, pad_token_id=0, bos_token_id=None, eos_token_id=1)
    return Gemma4Config(text_config=text, vision_config=None, audio_config=None, tie_word_embeddings=False)


def _scaled_model(kind: str):
    """Tiny Granite (logits / logits_scaling) and Cohere (logits × logit_scale): linear scalings
    applied after the head."""
    from transformers import CohereConfig, CohereForCausalLM, GraniteConfig, GraniteForCausalLM

    common = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, max_position_embeddings=128, pad_token_id=0, bos_token_id=None,
                  eos_token_id=1, tie_word_embeddings=False)
    torch.manual_seed(0)
    if kind == "granite":
        return GraniteForCausalLM(GraniteConfig(logits_scaling=0.1, **common))
    return CohereForCausalLM(CohereConfig(logit_scale=7.0, **common))


def test_softcap_in_a_nested_text_config_gives_the_models_own_logprobs():
    from transformers import Gemma4ForConditionalGeneration

    torch.manual_seed(0)
    model = Gemma4ForConditionalGeneration(_gemma4_config(64, SOFTCAP)).eval()
    assert getattr(model.config, "final_logit_softcapping", None) is None   # only text_config has it
    batch = _batch(64)
    got = sequence_stats(model, batch, chunk_rows=3).logp_sum
    want = _own_logp_sum(model, batch)
    assert (want - _own_logp_sum_uncapped(model, batch)).abs().max() > 1e-2   # the cap matters here
    assert torch.allclose(got, want, atol=TOL, rtol=TOL), (got, want)
    assert output_head(model) is None
    check = forward.check_head_bypass(model)
    assert not check.ok and check.max_diff > check.tolerance
    assert "differ" in check.reason


def _own_logp_sum_uncapped(model, batch) -> torch.Tensor:
    cap = model.config.text_config.final_logit_softcapping
    model.config.text_config.final_logit_softcapping = None
    try:
        return _own_logp_sum(model, batch)
    finally:
        model.config.text_config.final_logit_softcapping = cap


@pytest.mark.parametrize("kind", ["granite", "cohere"])
def test_linear_logit_scalings_give_the_models_own_logprobs(kind):
    model = _scaled_model(kind).eval()
    batch = _batch(64)
    got = sequence_stats(model, batch, chunk_rows=3).logp_sum
    assert torch.allclose(got, _own_logp_sum(model, batch), atol=TOL, rtol=TOL)
    # A scaling applied to the pass-through's output scales the hidden states the bypass projects,
    # and W(h·s) = (Wh)·s: the check finds the bypass exact and keeps it.
    assert forward.check_head_bypass(model).ok
    assert output_head(model) is not None


def test_plain_llama_keeps_the_bypass(tiny_model_dir):
    from amopo.models import load_model

    model = load_model(str(tiny_model_dir))
    check = forward.check_head_bypass(model)
    assert check.ok and check.max_diff <= check.tolerance and check.reason is None
    assert output_head(model) is not None


def test_the_check_restores_training_mode_and_the_head(tiny_model_dir):
    from amopo.models import load_model

    model = load_model(str(tiny_model_dir)).train()
    model.model.layers[0].eval()
    forward.check_head_bypass(model, torch.tensor([[5, 6, 7, 8]]), torch.tensor([[-100, -100, 7, 8]]))
    assert model.training and model.model.training and not model.model.layers[0].training
    assert type(model.lm_head) is torch.nn.Linear


def _gemma4_folder(tmp_path, tokenizer_dir) -> str:
    """A saved tiny Gemma 4 (nested softcap) with the tiny model's tokenizer."""
    from transformers import AutoTokenizer, Gemma4ForConditionalGeneration

    folder = tmp_path / "gemma4"
    shutil.copytree(tokenizer_dir, folder, ignore=shutil.ignore_patterns("*.safetensors", "config.json",
                                                                         "generation_config.json"))
    vocab = len(AutoTokenizer.from_pretrained(str(folder)))
    torch.manual_seed(0)
    Gemma4ForConditionalGeneration(_gemma4_config(vocab, SOFTCAP)).save_pretrained(str(folder))
    return str(folder)


@pytest.mark.parametrize("model", ["llama", "gemma4-nested-softcap"])
def test_training_records_and_prints_whether_the_bypass_is_used(model, prepared, tiny_model_dir, mlflow_uri,
                                                                 tmp_path, capsys):
    from amopo.train.loop import train

    folder = str(tiny_model_dir) if model == "llama" else _gemma4_folder(tmp_path, tiny_model_dir)
    summary = train(train_config(prepared, folder, tmp_path / "run", mlflow_uri, objective="simpo", max_steps=1,
                                 packing=False))
    state = summary["fast_path"]["chunked_logprobs"]
    recorded = json.loads((tmp_path / "run" / "metrics.json").read_text())["fast_path"]["chunked_logprobs"]
    assert recorded == state
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("fast path:")]
    assert printed and f"chunked_logprobs {state}" in printed[0]
    if model == "llama":
        assert state == "on"
    else:
        assert state.startswith("fallback: full logits on response positions")
        assert "differ from the model's own" in state
