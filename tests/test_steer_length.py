"""Verbosity steerability measured by answer length: the statistics and the level-to-length mapping by
hand on small constructed inputs, the mapping read from a prepared folder, and `amopo evaluate` on the
tiny model trained to steer verbosity (short at 0, long at 4) reporting it for the model and its base
model, with the figure."""

from __future__ import annotations

import json
import math

import pytest

from amopo.evaluate import steer_length
from amopo.evaluate.steer_length import length_summary, length_table, level_of_length
from helpers.records import LONG_ANSWER, SHORT_ANSWER, verbosity_prompts, write_jsonl
from helpers.training import train_verbosity_model

PNG = b"\x89PNG\r\n\x1a\n"


def test_the_data_defines_mean_tokens_per_score():
    assert length_table([10, 20, 50, 40], [0, 0, 4, 4]) == [(0.0, 15.0), (4.0, 45.0)]
    assert length_table([7, 3], [2, 1]) == [(1.0, 3.0), (2.0, 7.0)]


def test_a_length_maps_to_a_level_by_interpolation_clamped_at_the_ends():
    table = [(0.0, 15.0), (4.0, 45.0)]
    assert level_of_length(30, table) == 2.0                       # halfway between 15 and 45 tokens
    assert level_of_length(20, table) == pytest.approx(2 / 3)      # (20 − 15) · 4 / 30
    assert level_of_length(60, table) == 4.0 and level_of_length(5, table) == 0.0
    # Scores whose mean lengths tie share their mean level: points (10, 0) and (30, 3).
    assert level_of_length(20, [(0.0, 10.0), (2.0, 30.0), (4.0, 30.0)]) == pytest.approx(1.5)
    # Taken in order of length, not of score: (10, 4), (30, 0).
    assert level_of_length(15, [(0.0, 30.0), (4.0, 10.0)]) == pytest.approx(3.0)
    assert math.isnan(level_of_length(20, [(0.0, 10.0)]))
    assert math.isnan(level_of_length(20, [(0.0, 10.0), (4.0, 10.0)]))


def test_length_statistics_by_hand():
    # Instruction 0 answers 10, 30, 50 tokens at levels 0, 2, 4; instruction 1 answers 20, 20, 60.
    groups = [[(0.0, 10.0), (2.0, 30.0), (4.0, 50.0)], [(0.0, 20.0), (2.0, 20.0), (4.0, 60.0)]]
    out = length_summary(groups, [0.0, 2.0, 4.0], [(0.0, 15.0), (4.0, 45.0)], resamples=20, seed=0)
    assert (out["mean_tokens_at_0"], out["mean_tokens_at_2"], out["mean_tokens_at_4"]) == (15.0, 25.0, 55.0)
    assert out["mean_tokens_at_0_se"] == pytest.approx(5.0)        # sd 7.07 of (10, 20), over √2
    # Average ranks: x 1.5 3.5 5.5 1.5 3.5 5.5, y 1 4 5 2.5 2.5 6: Σ dx·dy = 15, Σ dx² = 16, Σ dy² = 17.
    assert out["length_spearman"] == pytest.approx(15 / math.sqrt(16 * 17))
    # Achieved levels (ℓ − 15) · 4/30 clamped to [0, 4]: 0, 2, 4 and 2/3, 2/3, 4.
    assert out["achieved_level_at_0"] == pytest.approx(1 / 3) and out["achieved_level_at_2"] == pytest.approx(4 / 3)
    assert out["achieved_level_at_4"] == 4.0
    # |requested − achieved|: 0, 0, 0, 2/3, 4/3, 0 → mean 1/3, sd² = (4/9 + 1/9 + 1) / 5 = 14/45.
    assert out["miscalibration"] == pytest.approx(1 / 3)
    assert out["miscalibration_se"] == pytest.approx(math.sqrt(14 / 45 / 6))
    no_data = length_summary(groups, [0.0, 2.0, 4.0], None, resamples=20, seed=0)
    assert "miscalibration" not in no_data and "achieved_level_at_0" not in no_data
    assert no_data["length_spearman"] == out["length_spearman"]


def test_a_model_that_ignores_the_request_has_no_length_correlation():
    # Every instruction answered alike at every level; all at 30 tokens = level 2 of the data.
    groups = [[(lv, 30.0 + 5 * i) for lv in (0.0, 2.0, 4.0)] for i in range(4)]
    out = length_summary(groups, [0.0, 2.0, 4.0], [(0.0, 30.0), (4.0, 45.0)], resamples=20, seed=0)
    assert out["length_spearman"] == pytest.approx(0.0, abs=1e-12)
    # achieved 0, 4/3, 8/3, 4 at every level: miscalibration = mean over levels 0, 2, 4 of |d − a|.
    achieved = [0.0, 4 / 3, 8 / 3, 4.0]
    expected = sum(abs(d - a) for d in (0.0, 2.0, 4.0) for a in achieved) / 12
    assert out["miscalibration"] == pytest.approx(expected)


def test_the_mapping_reads_each_distinct_response_of_the_prepared_splits(tmp_path, tiny_model_dir):
    from amopo.data.prepare import PrepareConfig, prepare
    from amopo.models import load_tokenizer
    from helpers.records import verbosity_pairs

    train = write_jsonl(tmp_path / "train.jsonl", verbosity_pairs(verbosity_prompts(3)))
    held = write_jsonl(tmp_path / "eval.jsonl", verbosity_pairs(verbosity_prompts(1, offset=50)))
    prepare(PrepareConfig(data_source=str(train), eval_source=str(held), output=str(tmp_path / "data"),
                          dimensions=["verbosity"]), echo=None)
    responses = steer_length.data_responses(tmp_path / "data", "verbosity")
    assert sorted(responses) == sorted([(SHORT_ANSWER, 0.0), (LONG_ANSWER, 4.0)])
    tokenizer = load_tokenizer(str(tiny_model_dir))
    short, long = steer_length.token_lengths(tokenizer, [SHORT_ANSWER, LONG_ANSWER])
    assert short == len(tokenizer(SHORT_ANSWER, add_special_tokens=False)["input_ids"]) and long > 5 * short


@pytest.mark.slow
def test_evaluate_reports_verbosity_by_length_for_the_model_and_its_base(tiny_model_dir, tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    from amopo.evaluate.evaluate import EvaluateConfig, evaluate

    prompts = verbosity_prompts(8)
    model = train_verbosity_model(tmp_path / "steer", tiny_model_dir, mlflow_uri, prompts)
    instructions = write_jsonl(tmp_path / "instructions.jsonl",
                               [{"id": str(i), "instruction": p} for i, p in enumerate(prompts[:4])])
    out = tmp_path / "eval"
    cfg = EvaluateConfig(model=str(model), judge=str(tiny_model_dir), judge_top_k=10_000, pairwise=False, lm_eval_tasks=[],
                         data=str(tmp_path / "steer" / "data"), instructions=str(instructions),
                         num_instructions=0, steer_num_instructions=4, max_new_tokens=48, max_length=256,
                         steer_bootstrap=20, output=str(out), mlflow_tracking_uri=mlflow_uri, progress=False)
    cfg.validate()
    summary = evaluate(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    report = json.loads((out / "report.json").read_text())

    for side in ("steer", "steer_base"):
        for key in ("mean_tokens_at_0", "mean_tokens_at_0_se", "mean_tokens_at_2", "mean_tokens_at_4",
                    "achieved_level_at_0", "achieved_level_at_4", "miscalibration", "miscalibration_se",
                    "mean_rating_at_0", "slope"):
            assert f"{side}/verbosity/{key}" in metrics, f"{side}/verbosity/{key}"
        assert f"{side}/verbosity/length_spearman" in metrics or \
            f"{side}/verbosity/length_spearman" in report["missing"]
    assert not [k for k in metrics if "side_effect" in k]       # one steered dimension, and off by default
    # The trained model follows the request: short at 0, long at 4, on its training prompts.
    assert metrics["steer/verbosity/mean_tokens_at_0"] * 3 < metrics["steer/verbosity/mean_tokens_at_4"]
    assert metrics["steer/verbosity/length_spearman"] > 0.5
    assert metrics["steer/verbosity/miscalibration"] < metrics["steer_base/verbosity/miscalibration"]
    # The mapping the data defines: "yes." at 0, the long answer at 4, in the model's tokens.
    (low, short), (high, long) = report["steer"]["length_tables"]["verbosity"]
    assert (low, high) == (0.0, 4.0) and long > 5 * short
    rows = [json.loads(line) for line in (out / "steer_samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 3 * 4 and all(isinstance(r["tokens"], int) for r in rows)
    assert (out / "steer_length.png").read_bytes()[:8] == PNG
    assert str(out / "steer_length.png") in summary["figures"]

    run = MlflowClient(mlflow_uri).get_run(summary["mlflow_run_id"])
    assert run.data.metrics["steer/verbosity/miscalibration"] == pytest.approx(
        metrics["steer/verbosity/miscalibration"])
    assert run.data.metrics["steer/verbosity/length_spearman"] == pytest.approx(
        metrics["steer/verbosity/length_spearman"])
