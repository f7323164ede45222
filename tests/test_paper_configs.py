"""configs/paper/: the AMoPO authors' run as `amopo prepare` / `amopo train` configs and pipeline values
files, checked against tests/data/authors_run.yaml — the table read from their script
(run_amopo/run_bash_accelerate.sh; each value names its line there), never against the script.

The script states per-step settings for a 2-GPU run and names 7B/14B/32B runs without settings of
their own; the 14B and 32B files need more GPUs than 2 (full fine-tuning under FSDP), so only their
global batch departs from the table, by the world size the file states (docs/method.md, "Where this
project departs from the authors").
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from amopo import config as config_lib
from amopo.data.prepare import PrepareConfig
from amopo.data.prompt_styles import AUTHORS
from amopo.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper"
RUN = yaml.safe_load((Path(__file__).parent / "data" / "authors_run.yaml").read_text())
CRDS = ROOT.parent / "shared" / "crds"
SIZES = ("7b", "14b", "32b")
# Processes per run: the script's 2 GPUs for 7B; what full fine-tuning of 14B / 32B needs under FSDP.
WORLD = {"7b": RUN["nnodes"] * RUN["gpus_per_node"], "14b": 8, "32b": 16}
DIMENSION_OF_OBJECT = {"no_object": "overall"}


def _dimensions() -> list[str]:
    return [DIMENSION_OF_OBJECT.get(o, o) for o in RUN["objects"]]


def check_train(cfg: TrainConfig) -> None:
    """``cfg`` trains as the script does (the script's names on the right)."""
    assert RUN["stage"] == "amopo" and RUN["pref_loss"] == "simpo" and cfg.objective == "amopo"
    assert (cfg.effective_beta, cfg.gamma) == (RUN["pref_beta"], RUN["simpo_gamma"])
    assert math.isclose(cfg.learning_rate, RUN["learning_rate"], rel_tol=0, abs_tol=1e-15)
    assert (cfg.max_steps, cfg.epochs) == (0, RUN["num_train_epochs"])
    assert RUN["lr_scheduler_type"] == "cosine"   # amopo's one schedule: linear warm-up, then cosine decay
    assert (cfg.warmup_ratio, cfg.max_grad_norm, cfg.weight_decay) == (RUN["warmup_ratio"], RUN["max_grad_norm"],
                                                                      RUN["weight_decay"])
    assert cfg.max_length == RUN["cutoff_len"] and cfg.seed == RUN["seed"]
    assert (cfg.batch_size, cfg.gradient_accumulation_steps) == (RUN["per_device_train_batch_size"],
                                                RUN["gradient_accumulation_steps"])
    assert RUN["finetuning_type"] == "full" and not cfg.lora
    # Their released code: accumulated prompts and one softmax over the flattened batch x K vector.
    assert cfg.accumulate_prefixes and cfg.flatten_softmax and cfg.weighting == "gaussian"


def check_prepare(cfg: PrepareConfig) -> None:
    """``cfg`` prepares the data as the script's preprocessing does."""
    assert cfg.prompt_style == "authors" and cfg.accumulate_prefixes
    assert cfg.dimensions == _dimensions()
    assert (cfg.max_records, cfg.eval_fraction, cfg.max_length) == (RUN["max_samples"], RUN["val_size"],
                                                                    RUN["cutoff_len"])
    assert RUN["template"] == "qwen" and AUTHORS.system == RUN["default_system"]


def test_the_paper_folder_holds_the_prepare_config_and_a_train_config_and_values_file_per_model():
    names = {p.name for p in PAPER.iterdir()}
    assert names == {"prepare.yaml", *(f"qwen2.5-{s}.yaml" for s in SIZES), *(f"values-qwen2.5-{s}.yaml" for s in SIZES)}


def test_the_prepare_config_loads_and_prepares_as_the_script():
    cfg = config_lib.resolve(PrepareConfig, PAPER / "prepare.yaml")
    check_prepare(cfg)
    assert cfg.data_format == "amopo" and RUN["dataset"] == "help_steer2_train_format_po2"


@pytest.mark.parametrize("size", SIZES)
def test_each_train_config_loads_as_amopo_train_does_and_trains_as_the_script(size):
    from amopo.train.fsdp import read_fsdp_config

    path = PAPER / f"qwen2.5-{size}.yaml"
    cfg = config_lib.resolve(TrainConfig, path)        # what `amopo train --config PATH` resolves
    check_train(cfg)
    model = f"Qwen2.5-{size.upper()}-Instruct"
    assert cfg.base_model == f"Qwen/{model}" and model in RUN["models"]
    assert cfg.mixed_precision == "bf16" and cfg.fsdp_config == "configs/accelerate/fsdp.yaml"
    assert read_fsdp_config(ROOT / cfg.fsdp_config)["fsdp_version"] == 2
    assert f"--nproc-per-node {min(WORLD[size], 8)}" in path.read_text()   # the launch line in its header
    global_batch = WORLD[size] * cfg.batch_size * cfg.gradient_accumulation_steps
    assert (global_batch == RUN["train_batch_size"]) == (size == "7b")


def _component_configs(p: dict) -> tuple[TrainConfig, PrepareConfig]:
    """The configs the pipeline's prepare and train steps build from these parameters (the option
    names of components/prepare.py and components/train.py)."""
    train = config_lib.from_dict(TrainConfig, {
        **p["train_options"], "base_model": p["base_model"], "objective": p["objective"], "beta": p["beta"],
        "gamma": p["gamma"], "learning_rate": p["learning_rate"], "max_steps": p["max_steps"], "batch_size": p["batch_size"],
        "gradient_accumulation_steps": p["gradient_accumulation_steps"], "max_length": p["max_length"], "heldout_max_pairs": p["heldout_max_pairs"]},
        "train options")
    prepare = config_lib.from_dict(PrepareConfig, {
        **p["prepare_options"], "data_source": p["data_source"], "data_format": p["data_format"], "max_length": p["max_length"],
        "dimensions": p["dimensions"].split(",")}, "prepare options")
    return train, prepare


@pytest.mark.parametrize("size", SIZES)
def test_each_values_file_submits_in_a_dry_run_and_runs_the_script_settings(size, tmp_path, capsys):
    from amopo.cluster.trainjob import IMAGE_PROJECT_DIR
    from pipelines.cli import main
    from pipelines.values import load_values

    path = PAPER / f"values-qwen2.5-{size}.yaml"
    argv = ["submit", "--dry-run", "--values", str(path), "--output-dir", str(tmp_path / "out")]
    if CRDS.is_dir():
        argv += ["--crd-dir", str(CRDS)]
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "every object validates" in out and "nothing was contacted" in out

    values = load_values(path)
    p = values.parameters
    (run,) = yaml.safe_load_all((tmp_path / "out" / "run.yaml").read_text())
    assert run["arguments"] == p and run["service_account"] == values.run["service_account"]
    (job,) = yaml.safe_load_all((tmp_path / "out" / "trainjob.yaml").read_text())
    trainer = job["spec"]["trainer"]
    assert trainer["numNodes"] * trainer["numProcPerNode"] == WORLD[size]
    assert trainer["args"][-2:] == ["--fsdp-config", f"{IMAGE_PROJECT_DIR}/configs/accelerate/fsdp.yaml"]

    train, prepare = _component_configs(p)
    check_train(train)
    check_prepare(prepare)
    assert p["annotate_dimension"] == "instruction_following" and p["data_format"] == "helpsteer2"
    # The values file trains as the train config of the same model.
    same = config_lib.resolve(TrainConfig, PAPER / f"qwen2.5-{size}.yaml")
    for key in ("base_model", "beta", "gamma", "learning_rate", "epochs", "batch_size", "gradient_accumulation_steps", "max_length", "warmup_ratio",
                "weight_decay", "max_grad_norm", "seed", "mixed_precision", "accumulate_prefixes", "flatten_softmax"):
        assert getattr(train, key) == getattr(same, key), key
