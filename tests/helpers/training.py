"""Training configs and saved weights for tests on the tiny model."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from amopo.train.config import TrainConfig


def train_config(prepared, model, out, mlflow_uri, **kw) -> TrainConfig:
    """A validated TrainConfig: 2 steps of batch 2 at lr 1e-3, no warm-up, no held-out evaluation."""
    base = dict(data=str(prepared), model=str(model), output=str(out), max_steps=2, lr=1e-3, batch_size=2,
                max_length=128, progress=False, eval_heldout=False, mlflow_tracking_uri=mlflow_uri,
                warmup_ratio=0.0)
    base.update(kw)
    cfg = TrainConfig(**base)
    cfg.validate()
    return cfg


def saved_weights(out: Path) -> dict[str, torch.Tensor]:
    """The state dict of ``out/model`` (a training output folder)."""
    return load_file(str(Path(out) / "model" / "model.safetensors"))


def assert_same_weights(a: dict, b: dict, atol: float = 1e-5):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=0), f"{k}: max diff {(a[k] - b[k]).abs().max()}"
