"""Win-rate arithmetic on hand-built verdicts, and the length-controlled GLM on cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from amopo.evaluate.lc_winrate import fit_firth_logistic, length_controlled_win_rate
from amopo.evaluate.pairwise import position_stats
from amopo.evaluate.winrate import combine_orders, mean_and_se, win_rate


def test_win_rate_and_standard_error_by_hand():
    # 3 wins, 1 loss, 1 tie, one soft verdict, one instruction with no verdict at all.
    prefs = [1.0, 1.0, 1.0, 0.0, 0.5, 0.8, None]
    res = win_rate(prefs)
    values = [1.0, 1.0, 1.0, 0.0, 0.5, 0.8]
    mean = sum(values) / 6                                    # 4.3 / 6
    var = sum((v - mean) ** 2 for v in values) / 5            # sample variance, ddof = 1
    assert res["raw"] == pytest.approx(4.3 / 6)
    assert res["raw_se"] == pytest.approx(math.sqrt(var / 6))
    assert (res["wins"], res["losses"], res["ties"], res["n"], res["unjudged"]) == (4, 1, 1, 6, 1)
    assert res["discrete"] == pytest.approx((4 + 0.5) / 6)


def test_win_rate_edge_cases():
    assert math.isnan(win_rate([None, None])["raw"]) and win_rate([None, None])["n"] == 0
    one = win_rate([1.0])
    assert one["raw"] == 1.0 and math.isnan(one["raw_se"])
    assert mean_and_se([0.0, 1.0]) == (0.5, pytest.approx(0.5))


def test_both_orders_cancel_a_position_bias():
    # P(model better) shown first = 0.9, shown second = 1 - P(first better) = 1 - 0.7 = 0.3.
    assert combine_orders(0.9, 0.3) == pytest.approx(0.6)
    assert combine_orders(None, 0.3) == 0.3 and combine_orders(0.9, None) == 0.9
    assert combine_orders(None, None) is None
    # A judge that always picks the first answer: preference 0.5 everywhere, first-position rate 1.
    records = [{"verdict_model_first": 1.0, "verdict_baseline_first": 0.0} for _ in range(4)]
    assert all(combine_orders(r["verdict_model_first"], r["verdict_baseline_first"]) == 0.5 for r in records)
    stats = position_stats(records + [{"verdict_model_first": None, "verdict_baseline_first": 0.0}])
    assert stats == {"unparseable": 1.0, "verdicts": 10.0, "first_position_rate": 1.0}


def _lengths(n: int, model_extra: float, seed: int):
    rng = np.random.default_rng(seed)
    model = rng.normal(400 + model_extra, 100, n).clip(1)
    baseline = rng.normal(400, 100, n).clip(1)
    return model, baseline


def test_lc_of_a_judge_that_only_prefers_longer_answers_is_near_half():
    # Verdict = "the longer answer", on 20 independent evaluations of 200 instructions where the
    # model is longer about 80% of the time. One such estimate is noisy (the verdicts are a step
    # in Δ, and LC reads the fit exactly at the step), so the claim is about their mean.
    raws, lcs = [], []
    for seed in range(20):
        model, baseline = _lengths(200, 120, seed=seed)
        prefs = [1.0 if m > b else 0.0 for m, b in zip(model, baseline)]
        raws.append(win_rate(prefs)["raw"])
        lcs.append(length_controlled_win_rate(prefs, model, baseline, bootstrap=0)["lc"])
    assert min(raws) > 0.75                             # raw: the model "wins" by being longer …
    assert abs(np.mean(lcs) - 0.5) < 0.07               # … which the length control removes


def test_lc_standard_error_covers_the_truth_and_raw_does_not():
    model, baseline = _lengths(200, 120, seed=0)
    prefs = [1.0 if m > b else 0.0 for m, b in zip(model, baseline)]
    raw, lc = win_rate(prefs), length_controlled_win_rate(prefs, model, baseline, bootstrap=100, seed=0)
    assert raw["raw"] - 0.5 > 5 * raw["raw_se"]
    assert abs(lc["lc"] - 0.5) < 2 * lc["lc_se"] and lc["lc_se"] < 0.2
    assert lc["length_coef"] > 3


def test_lc_of_a_soft_length_only_judge_is_half():
    # A weighted judge whose probability depends on length alone: the GLM is well specified.
    model, baseline = _lengths(100, 150, seed=2)
    delta = model - baseline
    prefs = list(1 / (1 + np.exp(-3 * np.tanh(delta / delta.std(ddof=1)))))
    lc = length_controlled_win_rate(prefs, model, baseline, bootstrap=20)
    assert win_rate(prefs)["raw"] > 0.7
    assert lc["lc"] == pytest.approx(0.5, abs=0.02)


def test_lc_keeps_a_quality_difference_that_length_does_not_explain():
    model, baseline = _lengths(200, 0, seed=3)
    rng = np.random.default_rng(4)
    prefs = list((rng.random(200) < 0.75).astype(float))   # wins 75% whatever the lengths
    lc = length_controlled_win_rate(prefs, model, baseline, bootstrap=20)
    assert lc["lc"] == pytest.approx(win_rate(prefs)["raw"], abs=0.04)


def test_lc_without_length_differences_is_firths_intercept_by_hand():
    # Equal lengths: only θ is identified; Firth's score equation gives p = (Σy + 1/2) / (n + 1).
    prefs = [1.0, 1.0, 1.0, 0.0, 0.5]
    lc = length_controlled_win_rate(prefs, [10] * 5, [10] * 5, bootstrap=0)
    assert lc["lc"] == pytest.approx((3.5 + 0.5) / 6, abs=1e-6)
    assert math.isnan(lc["lc_se"]) and lc["length_coef"] == 0.0


def test_lc_ignores_unjudged_and_needs_three_verdicts():
    assert math.isnan(length_controlled_win_rate([1.0, None, 0.0], [5, 6, 7], [5, 5, 5])["lc"])
    with_gap = length_controlled_win_rate([1.0, None, 0.0, 1.0], [9, 1, 3, 8], [5, 5, 5, 5], bootstrap=5)
    assert with_gap["n"] == 3 and 0 < with_gap["lc"] < 1


def test_firth_fit_is_finite_under_perfect_separation():
    x = np.c_[np.ones(6), [-2, -1, -0.5, 0.5, 1, 2]]
    w = fit_firth_logistic(x, np.array([0, 0, 0, 1, 1, 1.0]))
    assert np.all(np.isfinite(w)) and w[1] > 1 and abs(w[0]) < 1e-6
