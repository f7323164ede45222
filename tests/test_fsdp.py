"""FSDP2 sharding with 2 processes under torchrun, with the shipped configs/accelerate/fsdp.yaml:
gloo on CPU here, NCCL where each rank has a GPU (bench/gpu_check.sh).

Every sharded run is compared with one unsharded process at the same global batch (2 processes ×
batch 1 = batch 2): the updates must agree within 1e-5 (fp32; only the order of float sums
differs). A run killed after a checkpoint and resumed must end where the uninterrupted run ends.
Held-out evaluation is on with 5 pairs, so the two ranks hold 3 and 2: unequal shares must not hang.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from amopo import config as config_lib
from amopo.errors import ConfigError
from amopo.train.launch import run_local
from amopo.train.loop import train
from amopo.train.shipped import shipped_fsdp_config
from tests.helpers.training import assert_same_weights, saved_weights, train_config

pytestmark = pytest.mark.slow
FSDP = str(shipped_fsdp_config())
HELDOUT = dict(eval_heldout=True, heldout_max_pairs=5)


def _sharded(prepared, model, out, mlflow_uri, **kw) -> dict:
    cfg = train_config(prepared, model, out, mlflow_uri, batch_size=1, fsdp_config=FSDP, **kw)
    return run_local(cfg, num_processes=2)


def _single(prepared, model, out, mlflow_uri, **kw) -> dict:
    return train(train_config(prepared, model, out, mlflow_uri, batch_size=2, **kw))


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def amopo_runs(prepared, tiny_model_dir, mlflow_uri, tmp_path_factory):
    """AMoPO 4 steps: sharded with a checkpoint every 2 steps, and one process."""
    root = tmp_path_factory.mktemp("fsdp-amopo")
    sharded = _sharded(prepared, tiny_model_dir, root / "sharded", mlflow_uri, max_steps=4, save_every=2, **HELDOUT)
    single = _single(prepared, tiny_model_dir, root / "single", mlflow_uri, max_steps=4, **HELDOUT)
    return root, sharded, single


def test_sharded_amopo_matches_one_process(amopo_runs):
    root, sharded, single = amopo_runs
    assert sharded["fsdp"] and sharded["world_size"] == 2 and not single["fsdp"]
    assert_same_weights(saved_weights(root / "sharded"), saved_weights(root / "single"))
    assert _losses(root / "sharded") == pytest.approx(_losses(root / "single"), rel=1e-5, abs=1e-6)
    for tag in ("heldout_base", "heldout_final"):   # 3 + 2 pairs on the two ranks, counted once each
        assert sharded[tag]["pairs"] == single[tag]["pairs"] == 5
        assert sharded[tag] == pytest.approx(single[tag], abs=1e-5)


def test_sharded_run_says_which_fast_path_options_fall_back(amopo_runs):
    _, sharded, single = amopo_runs
    # The output head's weight is a DTensor shard: log-probs come from full logits on response
    # positions. Lean activations run inside each block, whose weights FSDP has gathered.
    assert sharded["fast_path"]["chunked_logprobs"].startswith("fallback: full logits")
    assert sharded["fast_path"]["lean_activations"].startswith("on (2 MLPs, 5 norms, gathered per block by FSDP")
    assert sharded["fast_path"]["packing"] == "on"
    assert single["fast_path"] == {"packing": "on", "chunked_logprobs": "on",
                                   "lean_activations": "on (2 MLPs, 5 norms)"}


def test_checkpoints_hold_sharded_state(amopo_runs):
    root, _, _ = amopo_runs
    step2 = root / "sharded" / "checkpoints" / "step-2"
    assert (step2 / "pytorch_model_fsdp_0").is_dir() and (step2 / "optimizer_0").is_dir()
    assert sorted(p.name for p in (step2 / "pytorch_model_fsdp_0").glob("*.distcp")) == ["__0_0.distcp",
                                                                                           "__1_0.distcp"]


def test_the_gathered_model_folder_loads_in_a_fresh_process(amopo_runs, tiny_model_dir):
    root, _, _ = amopo_runs
    folder = root / "sharded" / "model"
    code = ("import sys, json, torch; from transformers import AutoModelForCausalLM;"
            "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]);"
            "x = torch.arange(3, 19).view(1, -1);"
            "print(json.dumps({'params': sum(p.numel() for p in m.parameters()), "
            "'logit_sum': m(input_ids=x).logits.double().sum().item()}))")
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])

    from amopo.models import load_model
    single = load_model(str(root / "single" / "model"))
    base = load_model(str(tiny_model_dir))
    x = torch.arange(3, 19).view(1, -1)
    with torch.no_grad():
        want = single(input_ids=x).logits.double().sum().item()
    assert loaded["params"] == sum(p.numel() for p in base.parameters())
    assert loaded["logit_sum"] == pytest.approx(want, rel=1e-4)
    assert (folder / "tokenizer.json").is_file() and (folder / "config.json").is_file()


def test_killed_after_a_checkpoint_and_resumed_equals_the_uninterrupted_run(amopo_runs, prepared, tiny_model_dir,
                                                                            mlflow_uri, tmp_path):
    root, _, _ = amopo_runs
    out = tmp_path / "killed"
    cfg = train_config(prepared, tiny_model_dir, out, mlflow_uri, batch_size=1, fsdp_config=FSDP, max_steps=4,
                       save_every=2, **HELDOUT)
    config_file = tmp_path / "train.yaml"
    config_file.write_text(config_lib.dump_yaml(cfg))
    log = (tmp_path / "killed.log").open("w")
    job = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                            "-m", "amopo", "train", "--config", str(config_file)],
                           env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    checkpoint = out / "checkpoints" / "step-2" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not checkpoint.is_file() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait(timeout=60)
    log.close()
    assert checkpoint.is_file(), (tmp_path / "killed.log").read_text()[-3000:]
    assert not (out / "model").exists(), "the run finished before it was killed"

    cfg.resume = True
    resumed = run_local(cfg, num_processes=2)
    assert resumed["steps"] == 4
    assert_same_weights(saved_weights(out), saved_weights(root / "sharded"), atol=1e-6)
    assert [json.loads(x)["step"] for x in (out / "history.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert _losses(out) == pytest.approx(_losses(root / "sharded"), rel=1e-6, abs=1e-7)


CASES = {
    # objective and settings, sharded gradient_accumulation_steps, weight tolerance
    "simpo-accumulated": (dict(objective="simpo"), 2, 1e-5),
    # The two references compute the same sums in other batch layouts (float rounding, ~1e-7); Adam's
    # normalised first steps magnify that where a gradient element is near zero, hence 1e-4.
    "dpo": (dict(objective="dpo"), 1, 1e-4),
    # bf16: FSDP casts the gathered weights to bf16, one process autocasts each matmul; both round to
    # 8 bits, differently, and Adam's first steps move an element by ~lr wherever its gradient is near
    # rounding, so elementwise closeness says little: the updates θ − θ₀ are compared as a whole.
    "amopo-bf16-accumulated": (dict(objective="amopo", mixed_precision="bf16"), 2, None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sharded_baselines_and_precisions_match_one_process(case, prepared, tiny_model_dir, mlflow_uri, tmp_path):
    # Sharded DPO takes its reference log-probs precomputed (the default when sharded); the single
    # process takes them from a frozen copy, so this also checks the precomputed reference.
    settings, accum, atol = CASES[case]
    sharded = _sharded(prepared, tiny_model_dir, tmp_path / "sharded", mlflow_uri, max_steps=2, gradient_accumulation_steps=accum,
                       **settings)
    cfg = train_config(prepared, tiny_model_dir, tmp_path / "single", mlflow_uri, max_steps=2, batch_size=2 * accum,
                       **settings)
    single = train(cfg)
    assert sharded["mixed_precision"] == single["mixed_precision"] == settings.get("mixed_precision", "no")
    assert sharded["reference"] == ("precomputed" if settings["objective"] == "dpo" else None)
    assert single["reference"] == ("copy" if settings["objective"] == "dpo" else None)
    before = saved_weights_of(tiny_model_dir)
    after = saved_weights(tmp_path / "sharded")
    assert not [k for k in before if torch.equal(before[k], after[k])], "every parameter moves"
    if atol is not None:
        assert_same_weights(after, saved_weights(tmp_path / "single"), atol=atol)
    else:
        err = _relative_update_error(before, after, saved_weights(tmp_path / "single"))
        assert err <= 0.1, f"relative difference of the two updates: {err:.3f}"
    rel = 2.0 ** -6 if "mixed_precision" in settings else 1e-5
    assert _losses(tmp_path / "sharded") == pytest.approx(_losses(tmp_path / "single"), rel=rel, abs=1e-6)


def _relative_update_error(before: dict, a: dict, b: dict) -> float:
    """‖(a − θ₀) − (b − θ₀)‖ / ‖b − θ₀‖ over all parameters."""
    diff = sum(float((a[k] - b[k]).double().norm() ** 2) for k in before) ** 0.5
    update = sum(float((b[k] - before[k]).double().norm() ** 2) for k in before) ** 0.5
    return diff / update


def saved_weights_of(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


# ------------------------------------------------------------------ refusals (no processes started)


def test_fsdp_config_without_torchrun_is_refused(prepared, tiny_model_dir, mlflow_uri, tmp_path):
    cfg = train_config(prepared, tiny_model_dir, tmp_path / "out", mlflow_uri, fsdp_config=FSDP)
    with pytest.raises(ConfigError, match="start `amopo train` with torchrun"):
        train(cfg)


@pytest.mark.parametrize("overrides, words", [
    (dict(lora=True), "lora with fsdp_config is not supported"),
    (dict(compile=True), "compile with fsdp_config is not supported"),
    (dict(gradient_checkpointing=True), "gradient_checkpointing with fsdp_config"),
    (dict(objective="dpo", reference="copy"), "whole unsharded copy"),
])
def test_options_never_run_sharded_are_refused(overrides, words, prepared, tiny_model_dir, mlflow_uri, tmp_path):
    cfg = train_config(prepared, tiny_model_dir, tmp_path / "out", mlflow_uri, fsdp_config=FSDP, **overrides)
    with pytest.raises(ConfigError, match=words):
        train(cfg)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, words", [
    ("distributed_type: FSDP\nfsdp_config: {fsdp_version: 1}\n", "fsdp_version must be 2"),
    ("distributed_type: FSDP\nfsdp_config: {fsdp_version: 2, fsdp_offload_params: true}\n",
     "fsdp_offload_params is not supported"),
    ("distributed_type: DEEPSPEED\nfsdp_config: {}\n", "distributed_type must be FSDP"),
    ("distributed_type: FSDP\nmixed_precision: bf16\nfsdp_config: {}\n", "mixed_precision not read"),
    ("distributed_type: FSDP\n", "needs an fsdp_config mapping"),
])
def test_fsdp_config_files_with_untested_settings_are_refused(text, words, tmp_path):
    from amopo.train.fsdp import read_fsdp_config

    path = tmp_path / "fsdp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=words):
        read_fsdp_config(path)


def test_the_shipped_fsdp_config_is_accepted():
    from amopo.train.fsdp import SUPPORTED, read_fsdp_config

    assert read_fsdp_config(FSDP) == {key: values[0] for key, values in SUPPORTED.items()}
