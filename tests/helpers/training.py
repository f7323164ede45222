"""Training configs and saved weights for tests on the tiny model."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from amopo.train.config import TrainConfig


def train_config(prepared, model, out, mlflow_uri, **kw) -> TrainConfig:
    """A validated TrainConfig: 2 steps of batch 2 at lr 1e-3, no warm-up, no held-out evaluation."""
    base = dict(data=str(prepared), base_model=str(model), output=str(out), max_steps=2, learning_rate=1e-3, batch_size=2,
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


def train_verbosity_model(root: Path, base_model: Path, mlflow_uri: str, prompts: list[str]) -> Path:
    """A tiny model that answers short when asked for verbosity 0 and long when asked for 4: AMoPO on
    :func:`verbosity_pairs` (records.py) of ``prompts`` (dimension ``verbosity``) plus the SFT term
    on the chosen responses, which a random tiny model needs to produce either answer at all (with the
    preference terms alone it learnt to babble). Seeded, one torch thread (deterministic, and
    quick on shared cores: about 10 s of steps). Returns the trained model folder, which carries
    ``amopo_conditioning.json``."""
    from amopo.data.prepare import PrepareConfig, prepare
    from amopo.train.loop import train

    from .records import verbosity_pairs, verbosity_prompts, write_jsonl

    root.mkdir(parents=True, exist_ok=True)
    train_file = write_jsonl(root / "train.jsonl", verbosity_pairs(prompts))
    eval_file = write_jsonl(root / "eval.jsonl", verbosity_pairs(verbosity_prompts(2, offset=1000)))
    prepare(PrepareConfig(data_source=str(train_file), eval_source=str(eval_file), output=str(root / "data"),
                          dimensions=["verbosity"]), echo=None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(train_config(root / "data", base_model, root / "run", mlflow_uri, objective="amopo", max_steps=250,
                           learning_rate=1e-2, batch_size=4, sft_weight=1.0, mixed_precision="no", seed=42, log_every=250))
    finally:
        torch.set_num_threads(threads)
    return root / "run" / "model"
