"""A two-node training run simulated on one machine, started the way the Kubeflow Trainer's
torch-distributed runtime starts it: on each "node" the TrainJob's container command
(:func:`amopo.cluster.launch_command`, i.e. ``torchrun --module amopo train ...``) with no rendezvous
flags, only the PET_* variables the runtime injects (PET_NNODES=2, PET_NPROC_PER_NODE=1,
PET_NODE_RANK=0/1, PET_MASTER_ADDR, PET_MASTER_PORT). Both nodes share one output folder, as they
share the workspace volume in the cluster. The result must equal one process at the same global batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from amopo.cluster import launch_command

ROOT = Path(__file__).resolve().parents[1]
# What a pod would not have: rendezvous settings from whoever started pytest.
LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
               "TORCHELASTIC_RUN_ID")


def _records(n: int, offset: int = 0) -> list[dict]:
    out = []
    for i in range(offset, offset + n):
        out.append({
            "prompt": f"Question {i}: what is the value of item {i % 11}?",
            "chosen": {"response": f"The answer is number {i % 7 + 1}, as the question implies.",
                       "helpfulness": 4, "correctness": 4, "instruction_following": 5},
            "rejected": {"response": ["No idea.", "Maybe the moon, hard to say."][i % 2],
                         "helpfulness": 1, "correctness": 1 + i % 2, "instruction_following": 2},
        })
    return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    from amopo.data.prepare import PrepareConfig, prepare

    root = tmp_path_factory.mktemp("multinode-data")
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records(12)))
    (root / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records(4, offset=100)))
    prepare(PrepareConfig(data_source=str(root / "train.jsonl"), eval_source=str(root / "eval.jsonl"),
                          output=str(root / "data")))
    return root / "data"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_nodes_started_like_the_trainer_runtime_match_one_process(prepared, tiny_model_dir, tmp_path):
    from amopo.train.config import TrainConfig
    from amopo.train.loop import train

    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    flags = ["--data", str(prepared), "--base-model", str(tiny_model_dir), "--max-steps", "2", "--learning-rate", "1e-3",
             "--max-length", "128", "--no-progress", "--no-eval-heldout", "--warmup-ratio", "0",
             "--mlflow-tracking-uri", mlflow_uri]

    # Two nodes × one process × batch 1 = global batch 2.
    command = launch_command(distributed="ddp")
    assert command == ["torchrun", "--module", "amopo", "train"]
    torchrun = Path(sys.executable).parent / "torchrun"
    out_two = tmp_path / "two-nodes"
    base_env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and not k.startswith("PET_")}
    pet = {"PET_NNODES": "2", "PET_NPROC_PER_NODE": "1", "PET_MASTER_ADDR": "127.0.0.1",
           "PET_MASTER_PORT": str(_free_port())}
    logs = [(tmp_path / f"node-{rank}.log").open("w") for rank in (0, 1)]
    nodes = [subprocess.Popen([str(torchrun), *command[1:], *flags, "--output", str(out_two), "--batch-size", "1"],
                              env={**base_env, **pet, "PET_NODE_RANK": str(rank), "OMP_NUM_THREADS": "1"},
                              cwd=tmp_path, stdout=logs[rank], stderr=subprocess.STDOUT)
             for rank in (0, 1)]
    try:
        codes = [node.wait(timeout=300) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
        for fh in logs:
            fh.close()
    tails = "\n".join(f"--- node {r}:\n{(tmp_path / f'node-{r}.log').read_text()[-2000:]}" for r in (0, 1))
    assert codes == [0, 0], tails

    # One process, global batch 2, in this interpreter.
    out_one = tmp_path / "one-process"
    cfg = TrainConfig(data=str(prepared), base_model=str(tiny_model_dir), output=str(out_one), max_steps=2, learning_rate=1e-3,
                      batch_size=2, max_length=128, progress=False, eval_heldout=False, warmup_ratio=0.0,
                      mlflow_tracking_uri=mlflow_uri)
    cfg.validate()
    train(cfg)

    assert json.loads((out_two / "metrics.json").read_text())["world_size"] == 2
    one, two = (load_file(str(out / "model" / "model.safetensors")) for out in (out_one, out_two))
    assert one.keys() == two.keys()
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-5, rtol=0), \
            f"{key}: max diff {(one[key] - two[key]).abs().max()}"
    losses_one = [h["loss"] for h in _history(out_one)]
    losses_two = [h["loss"] for h in _history(out_two)]
    assert len(losses_one) == len(losses_two) == 2
    assert losses_two == pytest.approx(losses_one, rel=1e-5, abs=1e-6)
