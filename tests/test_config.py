"""The config system: defaults < YAML < flags, type checks, unknown keys, CLI wiring."""

import argparse

import pytest

from amopo import config as config_lib
from amopo.errors import ConfigError
from amopo.train.config import TrainConfig


def _parse(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    config_lib.add_arguments(parser, TrainConfig)
    args = parser.parse_args(argv)
    return config_lib.resolve(TrainConfig, args.config, {k: v for k, v in vars(args).items() if k != "config"})


def test_defaults_match_the_method_spec():
    cfg = TrainConfig()
    assert (cfg.objective, cfg.effective_beta, cfg.gamma, cfg.weighting) == ("amopo", 0.8, 2.0, "gaussian")
    assert (cfg.learning_rate, cfg.max_grad_norm, cfg.warmup_ratio, cfg.max_length) == (3e-7, 3.0, 0.1, 1024)
    assert TrainConfig(objective="dpo").effective_beta == 0.1


def test_yaml_then_flags_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 1.0e-5\nbatch_size: 4\nlora: true\nlora_target_modules: [q_proj, v_proj]\n")
    cfg = _parse(["--config", str(path), "--batch-size", "2", "--no-lora"])
    assert cfg.learning_rate == 1e-5 and cfg.batch_size == 2 and cfg.lora is False
    assert cfg.lora_target_modules == ["q_proj", "v_proj"]
    assert _parse(["--lora-target-modules", "a", "b"]).lora_target_modules == ["a", "b"]


@pytest.mark.parametrize("text, needle", [
    ("learning_rate: fast\n", "option 'learning_rate': expected a number"),
    ("batch_size: 1.5\n", "option 'batch_size': expected an integer"),
    ("lora: maybe\n", "option 'lora': expected true/false"),
    ("lr: 1\n", "unknown option(s) lr"),
    ("- 1\n- 2\n", "expected a mapping"),
    ("learning_rate: [\n", "not valid YAML"),
    ("objective: ppo\n", "objective 'ppo' is not one of"),
    ("batch_size: 0\n", "batch_size must be >= 1"),
    ("attention: flash3\n", "attention 'flash3' is not one of sdpa, eager, flash_attention_2"),
])
def test_bad_yaml_names_file_and_option(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        _parse(["--config", str(path)])
    assert needle in str(err.value)
    if "not one of" not in needle and "must be" not in needle:
        assert str(path) in str(err.value)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        _parse(["--config", str(tmp_path / "nope.yaml")])


def test_dump_round_trips():
    cfg = TrainConfig(objective="modpo", modpo_weight=0.3, lora=True)
    again = config_lib.from_dict(TrainConfig, __import__("yaml").safe_load(config_lib.dump_yaml(cfg)))
    assert again == cfg


def test_shipped_accelerate_configs_parse():
    """The one shipped accelerate config is FSDP2, is the file `shipped_fsdp_config()` finds, and
    parses as accelerate's own config file."""
    from pathlib import Path

    from accelerate.commands.config.config_args import ClusterConfig

    from amopo.train.shipped import shipped_fsdp_config

    folder = Path(__file__).parents[1] / "configs" / "accelerate"
    assert sorted(f.name for f in folder.iterdir()) == ["fsdp.yaml"]
    assert shipped_fsdp_config() == (folder / "fsdp.yaml").resolve()
    parsed = ClusterConfig.from_yaml_file(str(shipped_fsdp_config()))
    assert str(parsed.distributed_type) == "DistributedType.FSDP"
    assert parsed.fsdp_config["fsdp_version"] == 2


def test_quickstart_config_is_the_main_jobs_train_step():
    """configs/quickstart.yaml says it holds the pipeline's training defaults: every key the pipeline
    also has must carry the pipeline's default (β: amopo's own, as the pipeline's -1 means)."""
    from pathlib import Path

    from amopo.train.config import DEFAULT_BETA
    from pipelines.params import pipeline_parameters

    path = Path(__file__).parents[1] / "configs" / "quickstart.yaml"
    cfg = config_lib.resolve(TrainConfig, path)
    defaults = pipeline_parameters()
    shared = {k: v for k, v in config_lib.to_dict(cfg).items()
              if k in defaults and k not in ("beta", "mlflow_experiment", "mlflow_tracking_uri")}
    assert {"base_model", "objective", "learning_rate", "max_steps", "batch_size", "gradient_accumulation_steps",
            "max_length", "heldout_max_pairs", "gamma"} <= shared.keys()
    assert shared == {k: defaults[k] for k in shared}
    assert cfg.effective_beta == DEFAULT_BETA[defaults["objective"]]
