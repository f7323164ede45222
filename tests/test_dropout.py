"""Dropout is switched off for training, as the authors' trainer does (TRL's disable_dropout_in_model in
their LLaMA-Factory fork), on a tiny Llama whose config sets attention_dropout (a rate transformers
hands to the attention kernel: no nn.Dropout module is involved) and on a tiny GPT-2 (nn.Dropout
modules); the written model keeps the base model's config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers.training import train_config

ATTENTION_DROPOUT = 0.3


@pytest.fixture(scope="module")
def dropout_model_dir(tmp_path_factory) -> Path:
    """A tiny Llama folder whose config.json sets attention_dropout."""
    from amopo.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("tiny-dropout"))
    config = json.loads((folder / "config.json").read_text())
    config["attention_dropout"] = ATTENTION_DROPOUT
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _two_train_forwards(model) -> tuple[torch.Tensor, torch.Tensor]:
    model.train()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]])
    with torch.no_grad():
        torch.manual_seed(0)
        first = model(input_ids=ids).logits
        torch.manual_seed(1)
        return first, model(input_ids=ids).logits


def test_switch_makes_train_mode_forwards_identical_on_llama(dropout_model_dir):
    from amopo.models import load_model
    from amopo.train.dropout import base_config_values, disable_dropout

    model = load_model(str(dropout_model_dir))
    a, b = _two_train_forwards(model)
    assert not torch.equal(a, b)   # the attention dropout is live before the switch
    off = disable_dropout(model)
    assert off.modules == 2                                   # the two attention layers
    assert off.config == {"attention_dropout": ATTENTION_DROPOUT}
    assert model.config.attention_dropout == 0.0
    a, b = _two_train_forwards(model)
    assert torch.equal(a, b)
    with torch.no_grad():
        assert torch.equal(a, model.eval()(input_ids=torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]])).logits)
    with base_config_values(off):
        assert model.config.attention_dropout == ATTENTION_DROPOUT
    assert model.config.attention_dropout == 0.0


def test_switch_zeroes_every_dropout_module_on_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    from amopo.train.dropout import disable_dropout

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=2, n_head=2))
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert layers and all(m.p > 0 for m in layers)
    off = disable_dropout(model)
    assert all(m.p == 0 for m in layers)
    assert off.modules >= len(layers)
    assert {"resid_pdrop", "embd_pdrop", "attn_pdrop"} <= set(off.config)
    a, b = _two_train_forwards(model)
    assert torch.equal(a, b)


def test_training_runs_without_dropout_and_writes_the_base_config(prepared, dropout_model_dir, mlflow_uri,
                                                                   tmp_path, capsys):
    from amopo.train.loop import train

    summary = train(train_config(prepared, dropout_model_dir, tmp_path / "run", mlflow_uri, objective="dpo",
                                 reference="copy", mixed_precision="no", max_steps=1))
    # The policy trains in train mode and the copy runs in eval mode: with dropout live they differ.
    first = json.loads((tmp_path / "run" / "history.jsonl").read_text().splitlines()[0])
    assert first["rewards/chosen/plain"] == 0.0 and first["rewards/rejected/plain"] == 0.0
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["dropout_disabled"] is True and saved["dropout_modules_changed"] == 2
    assert summary["dropout_modules_changed"] == 2
    assert "dropout: off" in capsys.readouterr().out
    written = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert written["attention_dropout"] == ATTENTION_DROPOUT
