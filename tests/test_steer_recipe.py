"""bench/steer_recipe.py and configs/pipeline/steer.yaml: the steering recipe and its benchmark.

The values file is the recipe: the pipeline's prepare and train steps build their configs from it
as components/prepare.py and components/train.py do, and those are the configs the benchmark
measured (its setting without overrides, recorded in bench/results/steer_recipe.json).
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from amopo import config as config_lib
from amopo.data.prepare import PrepareConfig
from amopo.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "configs" / "pipeline" / "steer.yaml"
RESULTS = ROOT / "bench" / "results" / "steer_recipe.json"


def _bench():
    spec = importlib.util.spec_from_file_location("steer_recipe", ROOT / "bench" / "steer_recipe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _component_configs(p: dict) -> tuple[PrepareConfig, TrainConfig]:
    """The configs the pipeline's prepare and train steps build from the parameters ``p`` (the option
    names and conversions of components/prepare.py and components/train.py)."""
    prepare = {**p["prepare_options"], "data_source": p["data_source"], "data_format": p["data_format"],
               "eval_source": p["eval_source"] or None, "output": "dataset", "base_model": p["base_model"] or None,
               "max_length": p["max_length"]}
    if p["dimensions"].strip():
        prepare["dimensions"] = [d.strip() for d in p["dimensions"].split(",") if d.strip()]
    train = config_lib.from_dict(TrainConfig, {
        **p["train_options"], "data": "dataset", "base_model": p["base_model"], "objective": p["objective"],
        "beta": None if p["beta"] < 0 else p["beta"], "gamma": p["gamma"], "learning_rate": p["learning_rate"],
        "max_steps": p["max_steps"], "batch_size": p["batch_size"],
        "gradient_accumulation_steps": p["gradient_accumulation_steps"], "max_length": p["max_length"],
        "heldout_max_pairs": p["heldout_max_pairs"], "mlflow_experiment": p["mlflow_experiment"],
        "mlflow_tracking_uri": p["mlflow_tracking_uri"] or None, "output": "model"}, "train options")
    return PrepareConfig(**prepare), train


def _values_parameters() -> dict:
    from pipelines.params import pipeline_parameters
    from pipelines.values import load_values

    return {**pipeline_parameters(), **load_values(VALUES).parameters}


def test_the_values_file_builds_valid_prepare_and_train_configs_that_steer():
    prepare, train = _component_configs(_values_parameters())
    prepare.validate()
    train.validate()
    assert prepare.steer_both_orientations and "verbosity" in prepare.dimensions
    assert train.objective == "amopo" and train.sft_weight > 0 and train.max_steps > 0
    assert train.heldout_max_pairs == 0   # plain accuracy on the whole held-out split


def test_the_values_file_is_the_recipe_the_benchmark_measures():
    bench = _bench()
    (chosen,) = [s for s in bench.SETTINGS if not s["overrides"]]
    assert bench.CHOSEN == chosen["name"] and bench.VALUES_FILE == VALUES
    params = bench.setting_parameters(chosen)
    assert params == _values_parameters()
    ours = _component_configs(params)
    theirs = bench.component_configs(params)
    assert ours == theirs


def test_the_recorded_results_measured_the_values_file():
    if not RESULTS.is_file():
        pytest.skip("bench/results/steer_recipe.json not written yet")
    bench = _bench()
    doc = json.loads(RESULTS.read_text())
    assert not doc["quick"] and doc["chosen"] == bench.CHOSEN
    rows = {s["name"]: s for s in doc["settings"]}
    assert bench.CHOSEN in rows
    assert rows[bench.CHOSEN]["parameters"] == bench._recipe_view(_values_parameters())
    for setting in bench.SETTINGS:   # every recorded setting is the script's setting as it stands
        if setting["name"] in rows:
            assert rows[setting["name"]]["parameters"] == bench._recipe_view(bench.setting_parameters(setting))


def _check_rate(part: dict) -> None:
    assert 0.0 <= part["accuracy"] <= 1.0 and part["accuracy_se"] >= 0.0 and part["pairs"] >= 1
    assert math.isfinite(part["shift"])


def test_quick_run_end_to_end_writes_the_results_and_the_figure(tmp_path, tiny_model_dir):
    bench = _bench()
    rc = bench.main(["--quick", "--base-model", str(tiny_model_dir), "--output", str(tmp_path)])
    assert rc == 0
    doc = json.loads((tmp_path / "steer_recipe.json").read_text())
    assert (tmp_path / "steer_tradeoff.png").stat().st_size > 0
    assert doc["quick"] is True and doc["benchmark"] == "steer_recipe" and doc["dimension"] == "verbosity"
    assert doc["chosen"] == bench.CHOSEN and doc["values_file"] == "configs/pipeline/steer.yaml"
    assert {"cpu", "cores", "gpu", "loadavg_1min_at_start"} <= set(doc["machine"]) and doc["date"]
    assert [s["name"] for s in doc["settings"]] == [s["name"] for s in bench.SETTINGS]
    _check_rate(doc["base"]["steer"])
    for row in doc["settings"]:
        setting = next(s for s in bench.SETTINGS if s["name"] == row["name"])
        expected = {**bench.setting_parameters(setting, {**_values_parameters(), "base_model": str(tiny_model_dir)}),
                    **bench.QUICK}
        assert row["parameters"] == bench._recipe_view(expected)
        assert row["steps"] == bench.QUICK["max_steps"] and row["train_pairs"] > 0 and row["reversed_pairs"] > 0
        _check_rate(row["steer"])
        plain = row["plain"]
        assert 0.0 <= plain["model"] <= 1.0 and 0.0 <= plain["base"] <= 1.0
        assert plain["pairs"] == bench.QUICK["heldout_max_pairs"]
        lengths = row["lengths"]
        assert lengths["levels"] == {"low": 0.0, "high": 4.0}
        for side in ("low", "high"):
            tokens = lengths[f"{side}_tokens"]
            assert len(tokens) == bench.QUICK_PROMPTS and all(0 <= t <= 4 * bench.QUICK_NEW_TOKENS for t in tokens)
            assert lengths[f"{side}_mean"] == pytest.approx(sum(tokens) / len(tokens))
        assert all(v >= 0 for v in row["wall_s"].values()) and row["wall_s"]["total"] > 0
        assert {"cpu", "cores", "loadavg_1min_at_start", "loadavg_1min_at_end"} <= set(row["machine"]) and row["finished"]
        _check_capability(row["capability"])
    _check_capability(doc["base"]["capability"])
    table = bench.markdown_table(doc)
    assert len(table.splitlines()) == 2 + 1 + len(bench.SETTINGS) and "facts_mc acc" in table

    # --measure-only: the trained models measured again, the training figures kept
    before = {s["name"]: s for s in doc["settings"]}
    rc = bench.main(["--quick", "--measure-only", "--base-model", str(tiny_model_dir), "--output", str(tmp_path)])
    assert rc == 0
    again = json.loads((tmp_path / "steer_recipe.json").read_text())
    for row in again["settings"]:
        assert row["remeasured"]["finished"] and row["remeasured"]["wall_s"] >= 0
        assert row["wall_s"] == before[row["name"]]["wall_s"] and row["plain"] == before[row["name"]]["plain"]
        assert row["steer"]["pairs"] == before[row["name"]]["steer"]["pairs"]   # the same pairs, the same model
        _check_capability(row["capability"])


def _check_capability(got: dict) -> None:
    bench = _bench()
    for _, key, se in bench.CAPABILITY:
        assert 0.0 <= got[key] <= 1.0 and got[se] >= 0.0, (key, got)


def test_measure_only_needs_the_trained_models(tmp_path, tiny_model_dir, capsys):
    from amopo.errors import ConfigError

    bench = _bench()
    with pytest.raises(SystemExit) as exc:
        bench.main(["--measure-only", "--output", str(tmp_path)])
    assert exc.value.code == 2 and "holds no results (run without --measure-only first)" in capsys.readouterr().err
    name = bench.SETTINGS[0]["name"]
    (tmp_path / "steer_recipe.json").write_text(json.dumps({"quick": False, "settings": [{"name": name}]}))
    with pytest.raises(ConfigError, match=f"setting '{name}' has no trained model under .*{name}"):
        bench.main(["--measure-only", "--settings", name, "--output", str(tmp_path)])


def test_the_values_file_submits_in_a_dry_run(tmp_path, capsys):
    from pipelines.cli import main

    rc = main(["submit", "--dry-run", "--values", str(VALUES), "--output-dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "every object validates" in out


def test_the_steering_doc_shows_the_recorded_results():
    if not RESULTS.is_file():
        pytest.skip("bench/results/steer_recipe.json not written yet")
    bench = _bench()
    doc = (Path(__file__).resolve().parents[1] / "docs" / "steering.md").read_text(encoding="utf-8")
    assert bench.markdown_table(json.loads(RESULTS.read_text())) in doc, \
        "docs/steering.md's table is stale: paste `bench/steer_recipe.py --table`"
