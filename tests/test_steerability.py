"""Steerability: the statistics on constructed ratings (a model that ignores the request scores 0),
steering accuracy on held-out pairs that differ on a dimension, and `amopo evaluate` end to end on a
tiny conditioned model whose judge never sees the requested level."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from amopo.data.dimensions import KNOWN
from amopo.data.prompts import (CONDITIONING_FILE, conditioning_spec, render_prompt, render_response, steered_user_text,
                                steering_prefix)
from amopo.errors import ConfigError, SteeringError
from amopo.evaluate import steer_accuracy, steerability
from amopo.evaluate.judges import Verdict
from amopo.evaluate.steer_stats import average_ranks, binomial_rate, bootstrap_se, ols_slope, rating_summary, spearman
from tests.helpers.records import write_jsonl

PNG = b"\x89PNG\r\n\x1a\n"
DIMS = [KNOWN["overall"], KNOWN["helpfulness"], KNOWN["verbosity"]]
SPEC = conditioning_spec(DIMS)


# ---------------------------------------------------------------------------------------------
# Statistics on constructed ratings


def test_slope_and_its_ols_standard_error_by_hand():
    # x̄ = 1, ȳ = 7/3, Sxx = 2, Sxy = 3 → b = 1.5; residuals 1/6, −1/3, 1/6 → s² = 1/6, se = √(s²/Sxx).
    slope, se = ols_slope([0, 1, 2], [1, 2, 4])
    assert slope == pytest.approx(1.5) and se == pytest.approx(math.sqrt(1 / 12))
    assert math.isnan(ols_slope([1, 1, 1], [1, 2, 3])[0]) and math.isnan(ols_slope([0, 1], [1, 2])[1])


def test_spearman_shares_ranks_between_ties():
    assert average_ranks([3, 1, 3, 2]).tolist() == [3.5, 1.0, 3.5, 2.0]
    # ranks x 1.5 1.5 3.5 3.5, y 1 2.5 2.5 4: Σ dx·dy = 3, Σ dx² = 4, Σ dy² = 4.5.
    assert spearman([0, 0, 1, 1], [1, 2, 2, 3]) == pytest.approx(3 / math.sqrt(18))
    assert spearman([0, 1, 2], [5, 1, -3]) == pytest.approx(-1.0)
    assert math.isnan(spearman([0, 1, 2], [2, 2, 2]))


def _groups(rating, levels=(0.0, 2.0, 4.0), n=12):
    """One instruction's points per group: rating(i, level) at every level."""
    return [[(lv, rating(i, lv)) for lv in levels] for i in range(n)]


def test_a_model_that_ignores_the_request_scores_zero():
    levels = [0.0, 2.0, 4.0]
    # Greedy answers that ignore the prefix are identical at every level: one rating per instruction.
    same = rating_summary(_groups(lambda i, lv: 1 + (i * 7 % 5) * 0.8), levels, resamples=50, seed=0)
    assert same["slope"] == pytest.approx(0.0, abs=1e-12) and same["spearman"] == pytest.approx(0.0, abs=1e-12)
    assert same["mean_rating_at_0"] == same["mean_rating_at_4"]
    # Ratings that vary, but not with the level: both statistics within 3 standard errors of 0.
    rng = np.random.default_rng(3)
    noise = {(i, lv): float(rng.uniform(1, 5)) for i in range(40) for lv in levels}
    noisy = rating_summary(_groups(lambda i, lv: noise[i, lv], n=40), levels, resamples=200, seed=0)
    assert abs(noisy["slope"]) < 3 * noisy["slope_se"] and abs(noisy["spearman"]) < 3 * noisy["spearman_se"]
    assert noisy["ratings"] == 120


def test_a_model_that_follows_the_request():
    follow = rating_summary(_groups(lambda i, lv: 1 + lv + 0.1 * (i % 3)), [0.0, 2.0, 4.0], resamples=50, seed=0)
    assert follow["slope"] == pytest.approx(1.0) and follow["spearman"] > 0.9
    assert follow["mean_rating_at_2"] == pytest.approx(3.1) and follow["mean_rating_at_2_se"] > 0


def test_the_bootstrap_is_seeded_and_resamples_instructions():
    groups = _groups(lambda i, lv: (i * 3 + lv * (i % 2)) % 5 + 1)
    first = bootstrap_se(groups, spearman, resamples=100, seed=7)
    assert first == bootstrap_se(groups, spearman, resamples=100, seed=7) and first > 0
    assert first != bootstrap_se(groups, spearman, resamples=100, seed=8)
    assert math.isnan(bootstrap_se(groups[:1], spearman, resamples=100, seed=7))   # one instruction: undefined


def test_binomial_rate():
    assert binomial_rate(3, 4) == (0.75, pytest.approx(math.sqrt(0.75 * 0.25 / 4)))
    assert all(math.isnan(v) for v in binomial_rate(0, 0))


def test_side_effects_by_hand():
    dims = steerability.spec_dimensions(SPEC)                       # helpfulness, verbosity: both 0–4
    prompts = steerability.steer_prompts(SPEC, dims, ["a", "b"])
    items = steerability.side_effect_items(prompts, dims)
    # Low and high ends only (not the middle), each rated on the one other dimension: 2 dims × 2 ends × 2.
    assert len(items) == 8 and {it.level for it in items} == {0.0, 4.0}
    assert {(it.steered, it.other) for it in items} == {("helpfulness", "verbosity"), ("verbosity", "helpfulness")}
    assert all(prompts[it.index].dimension == it.steered and prompts[it.index].level == it.level for it in items)
    # Verbosity's rating when helpfulness is asked low: 2, 4; asked high: 3, None (unparseable, left out).
    # Helpfulness's rating when verbosity is asked low: 5, 5; high: 4, 2.
    table = {("helpfulness", 0.0): [2.0, 4.0], ("helpfulness", 4.0): [3.0, None],
             ("verbosity", 0.0): [5.0, 5.0], ("verbosity", 4.0): [4.0, 2.0]}
    ratings = [table[it.steered, it.level][prompts[it.index].index] for it in items]
    out = steerability.side_effects(items, ratings, dims)
    assert out["steer/side_effect/helpfulness/verbosity"] == pytest.approx(3.0 - 3.0)
    assert math.isnan(out["steer/side_effect/helpfulness/verbosity_se"])     # one rating at the high end
    assert out["steer/side_effect/verbosity/helpfulness"] == pytest.approx(3.0 - 5.0)
    # se: √(se_high² + se_low²) = √(1² + 0²), se_high = sd(4, 2)/√2 = 1.
    assert out["steer/side_effect/verbosity/helpfulness_se"] == pytest.approx(1.0)

    judge = RecordingJudge()
    answers = [f"answer {n}" for n in range(len(prompts))]
    steerability.rate_side_effects(judge, items, prompts, ["a", "b"], answers)
    assert judge.items == [(["a", "b"][prompts[it.index].index], answers[it.index], it.other) for it in items]


class RecordingJudge:
    """Rates an answer by its length, and records what it was shown."""

    def __init__(self):
        self.items = []

    def rate(self, items, desc=""):
        self.items += list(items)
        return [Verdict(float(len(answer) % 5 + 1), "") for _, answer, _ in items]


def test_judged_prompts_and_metric_names():
    dims = steerability.spec_dimensions(SPEC)
    assert [d.name for d in dims] == ["helpfulness", "verbosity"]
    assert steerability.levels(dims[0]) == [0.0, 2.0, 4.0]
    plain = ["Name a river.", "Explain rain."]
    prompts = steerability.steer_prompts(SPEC, dims, plain)
    assert len(prompts) == 2 * 3 * 2
    assert prompts[0].text.startswith("Respond at helpfulness level 0 on a scale of 0 to 4") and \
        prompts[0].text.endswith(plain[0])

    judge = RecordingJudge()
    answers = ["x" * (k % 4) for k in range(len(prompts))]
    verdicts = steerability.rate(judge, prompts, plain, answers)
    # The judge is shown the plain instruction and the answer: never the prefix with the requested level.
    assert [instruction for instruction, _, _ in judge.items] == [plain[p.index] for p in prompts]
    assert all("Respond at" not in instruction for instruction, _, _ in judge.items)

    values = [v.value for v in verdicts]
    values[0] = None
    metrics = steerability.summarize(prompts, values, dims, resamples=20, seed=0)
    assert metrics["steer/unparseable"] == 1 and metrics["steer/helpfulness/ratings"] == 5
    assert {"steer/verbosity/mean_rating_at_0", "steer/verbosity/mean_rating_at_2_se", "steer/verbosity/slope",
            "steer/verbosity/slope_se", "steer/verbosity/spearman", "steer/verbosity/spearman_se",
            "steer/mean_slope", "steer/mean_spearman"} <= set(metrics)
    assert not [k for k in metrics if "@" in k]   # MLflow refuses "@" in metric names

    with pytest.raises(ConfigError, match=r"not a scored dimension .*\(it steers: helpfulness, verbosity\)"):
        steerability.spec_dimensions(SPEC, ["overall"])


def test_the_spec_comes_from_the_model_folder_or_a_file(tmp_path):
    assert steerability.find_spec(str(tmp_path)) is None                        # trained without conditioning
    assert steerability.find_spec("embedded:smollm2-135m-instruct") is None     # not a folder
    (tmp_path / CONDITIONING_FILE).write_text(json.dumps(SPEC))
    assert steerability.find_spec(str(tmp_path)) == SPEC
    assert steerability.find_spec("http://127.0.0.1:9/v1", str(tmp_path / CONDITIONING_FILE)) == SPEC
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SteeringError, match="bad.json"):
        steerability.find_spec("m", str(tmp_path / "bad.json"))


def test_follows_needs_both_requests_and_ignoring_them_scores_zero():
    high = torch.tensor([0.5, 0.5, -0.5, 0.2])
    low = torch.tensor([-0.5, 0.5, -0.5, -0.1])
    assert steer_accuracy.follows(high, low).tolist() == [True, False, False, True]
    assert not steer_accuracy.follows(high, high).any()    # the same preference under both requests
    metrics = steer_accuracy.summarize({"helpfulness": [(True, 1.0), (False, 0.0)], "verbosity": [(False, -1.0)]})
    assert metrics["steer/helpfulness/accuracy"] == 0.5 and metrics["steer/helpfulness/shift"] == 0.5
    assert metrics["steer/accuracy"] == pytest.approx(1 / 3) and metrics["steer/accuracy_pairs"] == 3
    assert metrics["steer/accuracy_se"] == pytest.approx(math.sqrt(1 / 3 * 2 / 3 / 3))


# ---------------------------------------------------------------------------------------------
# On the tiny model


def _records(n: int, offset: int = 0) -> list[dict]:
    """Chosen: short and helpful. Rejected: long and unhelpful. Verbosity differs on even pairs only,
    the rejected response scored higher there."""
    return [{"prompt": f"Question {i}: describe item {i}.",
             "chosen": {"response": f"Item {i} is a cat.", "helpfulness": 4, "verbosity": 1},
             "rejected": {"response": f"Item {i} is long, long, because the river and the moon and the sun.",
                          "helpfulness": 1, "verbosity": 3 if i % 2 == 0 else 1}} for i in range(offset, offset + n)]


@pytest.fixture(scope="module")
def steer_data(tmp_path_factory):
    from amopo.data.prepare import PrepareConfig, prepare

    root = tmp_path_factory.mktemp("steer-data")
    write_jsonl(root / "train.jsonl", _records(6))
    write_jsonl(root / "eval.jsonl", _records(6, offset=10))
    prepare(PrepareConfig(data_source=str(root / "train.jsonl"), eval_source=str(root / "eval.jsonl"),
                          dimensions=[d.name for d in DIMS], output=str(root / "data")), echo=None)
    return root / "data"


def _mean_logprob(model, tokenizer, user_text: str, plain: str, response: str) -> float:
    prompt = tokenizer(render_prompt(tokenizer, user_text), add_special_tokens=False)["input_ids"]
    answer = tokenizer(render_response(tokenizer, plain, response), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + answer])).logits[0, len(prompt) - 1:-1].float()
    return float(torch.log_softmax(logits, -1).gather(1, torch.tensor(answer)[:, None]).mean())


def test_steering_accuracy_on_pairs_that_differ(steer_data, tiny_model_dir):
    from amopo.models import load_model, load_tokenizer

    model, tokenizer = load_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))
    pairs = steer_accuracy.eval_pairs(steer_data)
    dims = steerability.spec_dimensions(SPEC)
    outcomes = steer_accuracy.steering_outcomes(model, tokenizer, SPEC, pairs, dims, max_length=256, device="cpu",
                                                batch_size=3)
    assert len(outcomes["helpfulness"]) == 6 and len(outcomes["verbosity"]) == 3   # odd pairs tie on verbosity

    # Pair 0 on verbosity, by hand: the REJECTED response is the higher-scored one there.
    pair = pairs[0]
    req = {lv: steered_user_text(SPEC, {"verbosity": lv}, pair.prompt) for lv in (4.0, 0.0)}
    a = {(lv, side): _mean_logprob(model, tokenizer, req[lv], pair.prompt, text)
         for lv in req for side, text in (("h", pair.rejected.text), ("l", pair.chosen.text))}
    high, low = a[4.0, "h"] - a[4.0, "l"], a[0.0, "h"] - a[0.0, "l"]
    followed, shift = outcomes["verbosity"][0]
    assert shift == pytest.approx(high - low, abs=1e-4) and followed == (high > 0 and low < 0)

    metrics = steer_accuracy.summarize(outcomes, "steer_base")
    assert metrics["steer_base/accuracy_pairs"] == 9 and 0 <= metrics["steer_base/verbosity/accuracy"] <= 1
    assert steer_accuracy.eval_pairs(steer_data, max_pairs=2) == pairs[:2]


@pytest.fixture
def conditioned_model(tmp_path, tiny_model_dir):
    """A copy of the tiny model with a conditioning spec, laid out as `amopo train` leaves it (the
    base model named in train_config.yaml beside it)."""
    train = tmp_path / "train"
    shutil.copytree(tiny_model_dir, train / "model")
    (train / "model" / CONDITIONING_FILE).write_text(json.dumps(SPEC))
    (train / "train_config.yaml").write_text(f"base_model: {tiny_model_dir}\n")
    return train / "model"


@pytest.mark.slow
def test_evaluate_reports_steerability_without_showing_the_judge_the_request(conditioned_model, tiny_model_dir,
                                                                              steer_data, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from amopo.evaluate import judges
    from amopo.evaluate.evaluate import EvaluateConfig, evaluate

    shown = []
    real = judges.rating_messages
    monkeypatch.setattr(judges, "rating_messages", lambda *a, **kw: shown.append(real(*a, **kw)) or shown[-1])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "eval"
    cfg = EvaluateConfig(model=str(conditioned_model), judge=str(tiny_model_dir), judge_top_k=10_000, pairwise=False,
                         lm_eval_tasks=[], data=str(steer_data), num_instructions=6, steer_num_instructions=2,
                         max_new_tokens=4, max_length=256, steer_bootstrap=20, steer_side_effects=True,
                         steer_dimensions=["helpfulness", "verbosity"], output=str(out), mlflow_tracking_uri=uri,
                         progress=False)
    cfg.validate()
    summary = evaluate(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    report = json.loads((out / "report.json").read_text())

    assert report["baseline"] == str(tiny_model_dir) and report["steer"]["base"] == str(tiny_model_dir)
    for side in ("steer", "steer_base"):
        for dim in ("helpfulness", "verbosity"):
            for key in ("mean_rating_at_0", "mean_rating_at_2", "mean_rating_at_4", "slope", "slope_se",
                        "accuracy", "accuracy_se", "shift"):
                assert f"{side}/{dim}/{key}" in metrics, f"{side}/{dim}/{key}"
            assert f"{side}/{dim}/spearman" in metrics or f"{side}/{dim}/spearman" in report["missing"]
        assert metrics[f"{side}/helpfulness/ratings"] == 2 * 3 and metrics[f"{side}/accuracy_pairs"] == 9
        for steered, other in (("helpfulness", "verbosity"), ("verbosity", "helpfulness")):
            assert f"{side}/side_effect/{steered}/{other}" in metrics
        # Verbosity is measured by length too, calibrated on the data's responses; helpfulness is not.
        for key in ("mean_tokens_at_0", "mean_tokens_at_4", "miscalibration", "achieved_level_at_2"):
            assert f"{side}/verbosity/{key}" in metrics
        assert not [k for k in metrics if k.startswith(f"{side}/helpfulness/") and "tokens" in k]
    assert not [k for k in metrics if k.startswith("steer") and "overall" in k]   # holistic: nothing to steer
    assert metrics["judge/unparseable"] == 0 and "pref_accuracy/plain" in metrics

    # The judge saw 2 sides × 2 dimensions × 3 levels × 2 instructions, and for the side effects
    # 2 sides × 2 dimensions × 2 ends × 2 instructions on the other dimension; never a requested level.
    assert len(shown) == 24 + 16
    prefixes = [steering_prefix(SPEC, {d: lv}) for d in ("helpfulness", "verbosity") for lv in (0, 2, 4)]
    for messages in shown:
        text = "\n".join(m["content"] for m in messages)
        assert "Respond at" not in text and not any(p in text for p in prefixes)
    rows = [json.loads(line) for line in (out / "steer_samples.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and {r["side"] for r in rows} == {"model", "baseline"}
    assert [sorted(r.get("side_ratings", {})) for r in rows[:7]] == [["verbosity"], ["verbosity"], [], [],
                                                                      ["verbosity"], ["verbosity"], ["helpfulness"]]
    assert all(isinstance(r["tokens"], int) for r in rows)
    assert rows[0]["prompt"].startswith(steering_prefix(SPEC, {"helpfulness": 0})) and \
        rows[0]["prompt"].endswith(rows[0]["instruction"])
    assert (out / "steerability.png").read_bytes()[:8] == PNG
    assert (out / "steer_length.png").read_bytes()[:8] == PNG

    run = MlflowClient(uri).get_run(summary["mlflow_run_id"])
    assert run.data.metrics["steer/helpfulness/slope"] == pytest.approx(metrics["steer/helpfulness/slope"])
    assert run.data.metrics["steer_base/accuracy"] == pytest.approx(metrics["steer_base/accuracy"])
    assert run.data.metrics["steer/side_effect/verbosity/helpfulness"] == pytest.approx(
        metrics["steer/side_effect/verbosity/helpfulness"])


def test_steering_can_be_turned_off_and_bad_dimensions_fail_first(conditioned_model, tiny_model_dir, steer_data,
                                                                  tmp_path):
    from amopo.evaluate.evaluate import EvaluateConfig, evaluate

    base = dict(model=str(conditioned_model), judge=str(tiny_model_dir), pairwise=False, lm_eval_tasks=[],
                data=str(steer_data), max_length=256, progress=False, mlflow=False)
    with pytest.raises(ConfigError, match="steer_dimensions: correctness not a scored dimension"):
        evaluate(EvaluateConfig(**base, steer_dimensions=["correctness"], output=str(tmp_path / "bad")))
    assert not (tmp_path / "bad").exists()
    evaluate(EvaluateConfig(**base, steer=False, output=str(tmp_path / "off")))
    off = json.loads((tmp_path / "off" / "metrics.json").read_text())
    assert "pref_accuracy/plain" in off and not [k for k in off if k.startswith("steer")]
    assert not (tmp_path / "off" / "steerability.png").exists()


def test_by_default_only_the_dimensions_the_model_was_trained_to_steer_are_measured():
    from amopo.evaluate.steerability import spec_dimensions

    dims = [{"name": "overall"}, {"name": "helpfulness", "low": 0, "high": 4}, {"name": "verbosity", "low": 0, "high": 4}]
    names = lambda spec, *req: [d.name for d in spec_dimensions(spec, req)]   # noqa: E731
    assert names({"dimensions": dims, "steer_trained": ["verbosity"]}) == ["verbosity"]
    assert names({"dimensions": dims, "steer_trained": []}) == []
    assert names({"dimensions": dims}) == ["helpfulness", "verbosity"]   # a spec from before steer_trained
    assert names({"dimensions": dims, "steer_trained": []}, "helpfulness") == ["helpfulness"]   # asked for


def test_prepare_records_the_dimensions_its_train_split_shows_both_ways(tmp_path):
    from amopo.data.prepare import PrepareConfig, prepare

    plain = prepare(PrepareConfig(data_source="sample", output=str(tmp_path / "a"),
                                  dimensions=["overall", "helpfulness", "verbosity"]), echo=None)
    steer = prepare(PrepareConfig(data_source="sample", output=str(tmp_path / "b"),
                                  dimensions=["overall", "helpfulness", "verbosity"], steer_both_orientations=True),
                    echo=None)
    # the sample's verbosity pairs prefer the fuller answer; only their reversals show the other way
    assert plain["steer_trained"] == [] and steer["steer_trained"] == ["verbosity"]
