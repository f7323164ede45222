"""The trainer on a tiny model: parameters move, accumulation/resume/process-count invariance,
every objective runs, held-out accuracy improves, the CLI works end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from amopo.train.config import TrainConfig
from helpers.processes import free_port
from amopo.train.loop import train
from tests.helpers.records import answer_pairs
from tests.helpers.training import assert_same_weights, saved_weights, train_config

ROOT = Path(__file__).resolve().parents[1]

def test_amopo_changes_every_trainable_parameter_and_logs(prepared, tiny_model_dir, mlflow_uri, tmp_path):
    summary = train(train_config(prepared, tiny_model_dir, tmp_path / "run", mlflow_uri, max_steps=3))
    before = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    after = saved_weights(tmp_path / "run")
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, f"parameters not updated: {unchanged}"

    history = [json.loads(x) for x in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2, 3]
    dims = summary["dimensions"]
    assert dims == ["overall", "helpfulness", "correctness", "instruction_following"]
    for key in ["loss", "learning_rate", "grad_norm", "tokens_per_s"] + [f"{m}/{d}" for m in
                ("loss", "alpha", "accuracy", "margin", "rewards/chosen", "rewards/rejected") for d in dims]:
        assert key in history[0], key
    assert abs(sum(history[0][f"alpha/{d}"] for d in dims) - 1.0) < 1e-5  # α sums to 1 per pair
    assert (tmp_path / "run" / "training_curves.png").stat().st_size > 1000
    assert (tmp_path / "run" / "model" / "tokenizer.json").is_file()

    import mlflow
    mlflow.set_tracking_uri(mlflow_uri)
    run = mlflow.get_run(summary["mlflow_run_id"])
    assert run.data.params["objective"] == "amopo"
    assert "accuracy/correctness" in run.data.metrics
    client = mlflow.MlflowClient()
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 3
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"train_config.yaml", "metrics.json", "training_curves.png"} <= names


def test_gradient_accumulation_matches_the_bigger_batch(prepared, tiny_model_dir, mlflow_uri, tmp_path):
    big = train_config(prepared, tiny_model_dir, tmp_path / "big", mlflow_uri, batch_size=4, gradient_accumulation_steps=1)
    small = train_config(prepared, tiny_model_dir, tmp_path / "small", mlflow_uri, batch_size=1, gradient_accumulation_steps=4)
    train(big)
    train(small)
    assert_same_weights(saved_weights(tmp_path / "big"), saved_weights(tmp_path / "small"))


def test_resume_continues_to_the_same_result(prepared, tiny_model_dir, mlflow_uri, tmp_path):
    straight = train_config(prepared, tiny_model_dir, tmp_path / "straight", mlflow_uri, max_steps=4)
    train(straight)
    # Same run, checkpointing at step 2; then throw away everything after the checkpoint and resume.
    interrupted = train_config(prepared, tiny_model_dir, tmp_path / "resumed", mlflow_uri, max_steps=4, save_every=2)
    train(interrupted)
    ckpt = tmp_path / "resumed" / "checkpoints" / "step-2"
    assert (ckpt / "trainer_state.json").is_file()
    import shutil
    shutil.rmtree(tmp_path / "resumed" / "model")
    summary = train(train_config(prepared, tiny_model_dir, tmp_path / "resumed", mlflow_uri, max_steps=4, resume=True))
    assert summary["steps"] == 4
    assert_same_weights(saved_weights(tmp_path / "straight"), saved_weights(tmp_path / "resumed"), atol=1e-6)
    history = [json.loads(x)["step"] for x in (tmp_path / "resumed" / "history.jsonl").read_text().splitlines()]
    assert history == [1, 2, 3, 4]


def test_precomputed_reference_equals_the_frozen_copy_and_is_read_back(prepared, tiny_model_dir, mlflow_uri,
                                                                      tmp_path, capsys):
    import shutil

    for old in prepared.glob("tokenized/*/reference"):
        shutil.rmtree(old)
    copied = train(train_config(prepared, tiny_model_dir, tmp_path / "copy", mlflow_uri, objective="dpo", reference="copy"))
    first = train(train_config(prepared, tiny_model_dir, tmp_path / "pre", mlflow_uri, objective="modpo",
                               reference="precomputed"))
    assert "computed once by the initial policy" in capsys.readouterr().out
    assert len(list(prepared.glob("tokenized/*/reference/*.pt"))) == 1
    again = train(train_config(prepared, tiny_model_dir, tmp_path / "again", mlflow_uri, objective="dpo",
                               reference="precomputed"))
    assert "pairs read from" in capsys.readouterr().out   # dpo and modpo share the reference sums
    assert (copied["reference"], first["reference"], again["reference"]) == ("copy", "precomputed", "precomputed")
    # The same sums in other batch layouts (rounding ~1e-7), magnified where Adam's first steps divide
    # a near-zero gradient element by its own size.
    assert_same_weights(saved_weights(tmp_path / "copy"), saved_weights(tmp_path / "again"), atol=1e-4)


@pytest.mark.parametrize("overrides", [
    dict(objective="simpo"),
    dict(objective="dpo"),
    dict(objective="modpo", modpo_weight=0.5),
    dict(objective="amopo", weighting="mean", flatten_softmax=True, sft_weight=0.1),
    dict(objective="dpo", lora=True, lora_r=4, lora_alpha=8),
    dict(objective="amopo", lora=True, lora_r=4, lora_alpha=8, gradient_checkpointing=True),
], ids=["simpo", "dpo", "modpo", "amopo-ablation", "dpo-lora-adapter-reference", "amopo-lora-ckpt"])
def test_every_objective_trains(prepared, tiny_model_dir, mlflow_uri, tmp_path, overrides):
    summary = train(train_config(prepared, tiny_model_dir, tmp_path / "run", mlflow_uri, **overrides))
    history = [json.loads(x) for x in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    weights = saved_weights(tmp_path / "run")
    assert not any("lora" in k for k in weights), "LoRA must be merged into the written model"
    before = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    assert any(not torch.equal(before[k], weights[k]) for k in before)
    if overrides["objective"] in ("dpo", "modpo") and not overrides.get("lora"):
        # The reference is the initial policy: at step 1 the implicit rewards are exactly zero.
        assert history[0]["margin/plain"] == pytest.approx(0.0, abs=1e-6)
    assert summary["steps"] == 2


def test_heldout_preference_accuracy_improves_on_the_sample_set(mlflow_uri, tmp_path):
    """Train on the shipped sample train split, measure on its held-out topics."""
    from amopo.data.prepare import PrepareConfig, prepare
    from amopo.sample_data import sample_path
    from amopo.tiny import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny", texts=sample_path("train").read_text().splitlines(),
                             vocab_size=1024, hidden_size=64)
    prepare(PrepareConfig(data_source="sample", output=str(tmp_path / "data")))
    summary = train(train_config(tmp_path / "data", model, tmp_path / "run", mlflow_uri, max_steps=30, learning_rate=3e-3,
                         batch_size=4, max_length=256, gamma=0.5, eval_heldout=True))
    base, final = summary["heldout_base"], summary["heldout_final"]
    assert base["pairs"] == final["pairs"] > 50
    assert final["accuracy/mean_dimensions"] >= base["accuracy/mean_dimensions"] + 0.1
    assert final["accuracy/mean_dimensions"] >= 0.65
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["heldout_final"] == final


def _torchrun(args: list[str], env: dict, nproc: int, extra: list[str] = ()) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", *extra,
           "-m", "amopo", "train", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_processes_match_one_at_equal_global_batch(prepared, tiny_model_dir, mlflow_uri, tmp_path):
    common = ["--data", str(prepared), "--base-model", str(tiny_model_dir), "--max-steps", "2", "--learning-rate", "1e-3",
              "--max-length", "128", "--no-progress", "--no-eval-heldout", "--warmup-ratio", "0",
              "--mlflow-tracking-uri", mlflow_uri]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = _torchrun(common + ["--output", str(tmp_path / "one"), "--batch-size", "2"], env, 1,
                    [f"--master_port={free_port()}"])
    assert one.returncode == 0, one.stderr[-3000:]
    two = _torchrun(common + ["--output", str(tmp_path / "two"), "--batch-size", "1"], env, 2,
                    [f"--master_port={free_port()}"])
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["world_size"] == 2
    assert_same_weights(saved_weights(tmp_path / "one"), saved_weights(tmp_path / "two"))


def test_cli_prepare_and_train_end_to_end(tiny_model_dir, mlflow_uri, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in answer_pairs(12)))
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri}
    amopo = [sys.executable, "-m", "amopo"]
    prep = subprocess.run(amopo + ["prepare", "--data-source", str(data), "--output", str(tmp_path / "data"),
                                   "--base-model", str(tiny_model_dir)], capture_output=True, text=True, env=env)
    assert prep.returncode == 0, prep.stderr
    cfg = tmp_path / "train.yaml"
    cfg.write_text(f"data: {tmp_path / 'data'}\nbase_model: {tiny_model_dir}\nmax_steps: 1\nmax_length: 128\n")
    res = subprocess.run(amopo + ["train", "--config", str(cfg), "--output", str(tmp_path / "out"),
                                  "--batch-size", "2", "--learning-rate", "1e-4", "--no-progress"],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"model_dir: {tmp_path / 'out' / 'model'}" in res.stdout and (tmp_path / "out" / "model" / "model.safetensors").is_file()


def test_cli_reports_bad_options_in_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "amopo", "train", "--data", str(tmp_path), "--objective", "ppo"],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert "objective 'ppo' is not one of amopo, simpo, dpo, modpo" in res.stderr
    assert "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-m", "amopo", "train", "--data", str(tmp_path / "none")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "not a prepared data folder" in res.stderr


def test_logit_window_gives_the_same_statistics_as_full_logits(tiny_model_dir):
    from amopo.models import load_model
    from amopo.objectives import response_token_stats
    from amopo.train.batching import pad_sequences
    from amopo.train.step import sequence_stats

    model = load_model(str(tiny_model_dir))
    seqs = [([5, 6, 7, 8, 9, 10], [11, 12, 13]), ([5, 6, 7], [20, 21, 22, 23, 24]), ([1, 2, 3, 4], [30])]
    batch = pad_sequences(seqs, pad_id=0)
    fast = sequence_stats(model, batch)
    full = response_token_stats(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                batch["labels"])
    for a, b in zip(fast, full):
        assert torch.allclose(a, b, atol=1e-6, equal_nan=True)
    fast.logp_sum.sum().backward()
    assert model.lm_head.weight.grad is not None
