"""The offline path on tiny models: the local log-probability judge, lm-eval on a shipped task, and
`evaluate` end to end on a model trained here, logged into its training run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from amopo.errors import ConfigError, ModelError
from amopo.evaluate.evaluate import EvaluateConfig, evaluate
from amopo.evaluate.heldout import heldout_preference_accuracy
from amopo.evaluate.judge_prompts import load_prompt_set
from amopo.evaluate.judges import LocalJudge
from amopo.evaluate.lm_eval_tasks import flatten_results, metric_key, run_lm_eval, shipped_tasks
from tests.helpers.records import arithmetic_pairs, write_jsonl

PNG = b"\x89PNG\r\n\x1a\n"


def test_local_judge_reads_label_token_probabilities(tiny_model_dir):
    judge = LocalJudge(str(tiny_model_dir), load_prompt_set("v1"), top_k=10_000, batch_size=2, progress=False)
    items = [("Say hi.", "hi", "hello there"), ("Say hi.", "hello there", "hi"), ("Name a colour.", "red", "")]
    verdicts = judge.compare(items)
    assert all(0 < v.value < 1 and v.raw.startswith("P(A)=") for v in verdicts)
    # The verdict is P(A) among the label tokens, computed here by hand from the model's logits.
    conversation = judge._render([{"role": "system", "content": judge.prompts.pairwise.system},
                                  {"role": "user", "content": judge.prompts.pairwise.messages(
                                      instruction="Say hi.", output_a="hi", output_b="hello there")[1]["content"]}])
    with torch.no_grad():
        logits = judge.model(**judge.tokenizer(conversation, return_tensors="pt", add_special_tokens=False)).logits
    probs = torch.softmax(logits[0, -1].float(), -1)
    a, b = (sum(probs[i] for i in ids) for ids in judge._pair_ids)
    assert verdicts[0].value == pytest.approx(float(a / (a + b)), rel=1e-4)

    ratings = judge.rate([("Say hi.", "hi", "helpfulness"), ("Say hi.", "hi", "correctness")])
    assert all(1 <= r.value <= 5 for r in ratings) and ratings[0].value != ratings[1].value


def test_local_judge_counts_off_topic_replies_as_unparseable(tiny_model_dir):
    judge = LocalJudge(str(tiny_model_dir), load_prompt_set("v1"), top_k=1, progress=False)
    items = [("Say hi.", "hi", "hello"), ("What is 2+2?", "4", "5"), ("Name a city.", "Paris", "a dog")]
    verdicts = judge.compare(items)
    for (instruction, first, second), verdict in zip(items, verdicts):
        messages = judge.prompts.pairwise.messages(instruction=instruction, output_a=first, output_b=second)
        enc = judge.tokenizer(judge._render(messages), return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            top1 = int(judge.model(**enc).logits[0, -1].argmax())
        label_ids = {i for ids in judge._pair_ids for i in ids}
        assert (verdict.value is None) == (top1 not in label_ids)


def test_lm_eval_metric_names():
    assert metric_key("amopo_facts_mc", "acc,none") == "lm_eval/amopo_facts_mc/acc"
    assert metric_key("gsm8k", "exact_match,strict-match") == "lm_eval/gsm8k/exact_match/strict-match"
    flat = flatten_results({"t": {"alias": "t", "acc,none": 0.5, "acc_stderr,none": "N/A", "sample_len": 3}})
    assert flat == {"lm_eval/t/acc": 0.5}
    assert shipped_tasks() == ["amopo_arithmetic", "amopo_facts_mc"]


@pytest.mark.slow
def test_lm_eval_runs_the_shipped_tasks_on_a_tiny_model(tiny_model_dir):
    metrics, report = run_lm_eval(str(tiny_model_dir), ["amopo_arithmetic", "amopo_facts_mc"], limit=3, batch_size=4)
    assert set(metrics) >= {"lm_eval/amopo_arithmetic/exact_match/last_number", "lm_eval/amopo_facts_mc/acc",
                            "lm_eval/amopo_facts_mc/acc_norm"}
    assert all(0.0 <= v <= 1.0 for k, v in metrics.items() if "stderr" not in k)
    assert [(r["model"], r["chat_template"]) for r in report["runs"]] == [("hf", True)] and report["skipped"] == {}
    assert {t: n["effective"] for t, n in report["n-samples"].items()} == {"amopo_arithmetic": 3, "amopo_facts_mc": 3}


# ---------------------------------------------------------------------------------------------
# End to end on a model trained here


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """A real training run (prepare → train 2 steps, held-out accuracy on) with its MLflow run."""
    from amopo.data.prepare import PrepareConfig, prepare
    from amopo.train.config import TrainConfig
    from amopo.train.loop import train

    root = tmp_path_factory.mktemp("eval-e2e")
    write_jsonl(root / "train.jsonl", arithmetic_pairs(8))
    write_jsonl(root / "eval.jsonl", arithmetic_pairs(6, offset=50))
    prepare(PrepareConfig(data_source=str(root / "train.jsonl"), eval_source=str(root / "eval.jsonl"),
                          output=str(root / "data")))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = TrainConfig(data=str(root / "data"), base_model=str(tiny_model_dir), output=str(root / "train"), max_steps=2,
                      learning_rate=1e-3, batch_size=2, max_length=128, progress=False, mlflow_tracking_uri=uri,
                      warmup_ratio=0.0)
    cfg.validate()
    return {"root": root, "summary": train(cfg), "uri": uri}


@pytest.mark.slow
def test_evaluate_end_to_end_into_the_training_run(trained, tiny_model_dir):
    from mlflow.tracking import MlflowClient

    root, train_summary = trained["root"], trained["summary"]
    out = root / "eval"
    cfg = EvaluateConfig(model=str(root / "train" / "model"), judge=str(tiny_model_dir), judge_top_k=10_000,
                         dimensions=["helpfulness", "instruction_following"], num_instructions=5, max_new_tokens=8,
                         lm_eval_tasks=[], data=str(root / "data"), max_length=128, lc_bootstrap=20, output=str(out),
                         steer_num_instructions=2, steer_bootstrap=10, steer_dimensions=["helpfulness", "correctness"],
                         progress=False)
    cfg.validate()
    summary = evaluate(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    report = json.loads((out / "report.json").read_text())

    # Defaults found beside the model: the base model as baseline, the training run for MLflow.
    assert report["baseline"] == str(tiny_model_dir)
    assert summary["mlflow_run_id"] == train_summary["mlflow_run_id"]
    for key in ("winrate/raw", "winrate/raw_se", "winrate/lc", "winrate/lc_se", "length/model_avg",
                "length/baseline_avg", "dimension/helpfulness/model", "dimension/helpfulness/baseline",
                "dimension/helpfulness/delta", "dimension/instruction_following/delta", "judge/unparseable",
                "pref_accuracy/plain", "pref_accuracy/helpfulness", "pref_accuracy/mean_dimensions",
                # the trained folder carries its conditioning spec: steerability beside the base model
                "steer/helpfulness/slope", "steer_base/helpfulness/slope", "steer/correctness/mean_rating_at_4",
                "steer/accuracy", "steer_base/accuracy"):
        assert key in metrics, key
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert metrics["judge/unparseable"] == 0 and metrics["winrate/n"] == 5
    assert 0 <= metrics["winrate/raw"] <= 1 and metrics["winrate/raw_se"] > 0
    # Same model, eval split and cutoff as the trainer's own final held-out evaluation: its numbers
    # are reused (with the base model's beside them), and measuring again gives the same ones.
    final, base = train_summary["heldout_final"], train_summary["heldout_base"]
    assert metrics["pref_accuracy/mean_dimensions"] == final["accuracy/mean_dimensions"]
    assert metrics["pref_base_accuracy/mean_dimensions"] == base["accuracy/mean_dimensions"]
    again = heldout_preference_accuracy(str(root / "train" / "model"), str(root / "data"), max_length=128,
                                        progress=False)
    assert again["pref_accuracy/mean_dimensions"] == pytest.approx(final["accuracy/mean_dimensions"])
    assert again["pref_margin/helpfulness"] == pytest.approx(final["margin/helpfulness"], abs=1e-5)

    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 5 and (out / "samples.csv").read_text().count("\n") >= 6
    first = samples[0]
    assert first["model_length"] == len(first["model_output"]) and first["baseline_output"] is not None
    assert 0 <= first["verdict_model_first"] <= 1 and 1 <= first["score/helpfulness/baseline"] <= 5
    for figure in ("dimension_radar.png", "win_rates.png", "training_curves.png", "steerability.png"):
        assert (out / figure).read_bytes()[:8] == PNG

    client = MlflowClient(trained["uri"])
    run = client.get_run(train_summary["mlflow_run_id"])
    assert run.data.metrics["winrate/raw"] == pytest.approx(metrics["winrate/raw"])
    assert run.data.metrics["pref_accuracy/mean_dimensions"] == pytest.approx(metrics["pref_accuracy/mean_dimensions"])
    assert run.data.tags["amopo.evaluated"] == "true" and run.data.tags["eval.judge"] == str(tiny_model_dir)
    assert run.info.run_name != "evaluate" and run.info.status == "FINISHED"
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/metrics.json", "evaluation/win_rates.png", "evaluation/dimension_radar.png",
            "evaluation/samples.jsonl", "evaluation/outputs"} <= logged


@pytest.mark.slow
def test_rerun_replaces_the_output_and_can_log_to_a_linked_run(trained):
    from mlflow.tracking import MlflowClient

    root, train_summary = trained["root"], trained["summary"]
    out = root / "eval-rerun"
    base = dict(model=str(root / "train" / "model"), pairwise=False, lm_eval_tasks=[], data=str(root / "data"),
                max_length=128, output=str(out), progress=False, new_mlflow_run=True, steer=False)
    first = evaluate(EvaluateConfig(**base, heldout_max_pairs=2))
    second = evaluate(EvaluateConfig(**base))
    metrics = json.loads((out / "metrics.json").read_text())
    assert first["pref_accuracy/pairs"] == 2 and metrics["pref_accuracy/pairs"] == 6
    assert "pref_base_accuracy/plain" not in first        # other settings than training's: measured anew
    assert sorted(p.name for p in out.iterdir()) == ["eval_config.yaml", "metrics.json", "report.json",
                                                     "training_curves.png"]
    assert not [p for p in root.iterdir() if p.name.startswith(".eval-rerun")]   # no temp folders left
    run = MlflowClient(trained["uri"]).get_run(second["mlflow_run_id"])
    assert second["mlflow_run_id"] != train_summary["mlflow_run_id"]
    assert run.data.tags["amopo.train_run_id"] == train_summary["mlflow_run_id"]
    assert run.data.params["eval.pairwise"] == "False"

    foreign = root / "not-an-eval"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an earlier evaluation output"):
        evaluate(EvaluateConfig(**{**base, "output": str(foreign)}))
    assert (foreign / "keep.txt").read_text() == "mine"


def test_bad_options_fail_before_any_work(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="--model is required"):
        evaluate(EvaluateConfig(output=str(tmp_path / "x")))
    with pytest.raises(ConfigError, match="needs the model's log-probabilities"):
        evaluate(EvaluateConfig(model="http://127.0.0.1:9", data=str(tmp_path), output=str(tmp_path / "x")))
    with pytest.raises(ConfigError, match="nothing to do"):
        evaluate(EvaluateConfig(model="m", pairwise=False, lm_eval_tasks=[], output=str(tmp_path / "x")))
    with pytest.raises(ModelError, match="no-such-base: no such model folder"):
        evaluate(EvaluateConfig(model=str(tiny_model_dir), baseline=str(tmp_path / "no-such-base"),
                                output=str(tmp_path / "x")))
    cfg = EvaluateConfig(model="m", max_new_tokens=0)
    with pytest.raises(ConfigError, match="max_new_tokens must be >= 1"):
        cfg.validate()
    assert not Path(tmp_path / "x").exists()


def test_held_out_accuracies_carry_their_standard_errors():
    from amopo.evaluate.heldout import report_names

    out = report_names({"accuracy/plain": 0.625, "accuracy/helpfulness": 0.5, "margin/plain": 0.1, "pairs": 32})
    assert out["pref_accuracy_se/plain"] == pytest.approx((0.625 * 0.375 / 32) ** 0.5)
    assert out["pref_accuracy_se/helpfulness"] == pytest.approx((0.25 / 32) ** 0.5)
    assert out["pref_accuracy/pairs"] == 32 and "pref_accuracy_se/pairs" not in out
