"""MODPO's margin comes from the objectives other than the one being optimised (Zhou et al., 2024):

    ℓ = −log σ( (β/w_k)·(Δ_w − Δ_l) − (1/w_k)·w_{−k}ᵀ(r_{−k}(y_w) − r_{−k}(y_l)) )

On HelpSteer2-style pairs helpfulness picks the chosen response, so a margin from helpfulness would
always be ≥ 0 and restate the preference being learnt; the margin comes from the other scored
dimensions (each weighted (1 − w_k)/M) and can be negative, and a run with no other objective to
take it from is refused. Expected values are worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from amopo.errors import ConfigError
from amopo.train.config import TrainConfig
from amopo.train.step import micro_step
from tests.helpers.records import answer_pairs, write_jsonl
from tests.helpers.training import train_config

DIMS = ["overall", "helpfulness", "correctness", "coherence"]
NAN = math.nan


def _row(i: int, chosen: list[float], rejected: list[float], reward: tuple[float, float] = (NAN, NAN)) -> dict:
    """A tokenised row (amopo.data.tokenize layout) with the given scores on :data:`DIMS`."""
    return {"id": i, "prompt_ids": [[5, 6, 7, 8]] * len(DIMS), "plain_prompt_ids": [5, 6, 7, 8 + i],
            "chosen_ids": [20, 21, 22 + i], "rejected_ids": [30, 31 + i], "chosen_scores": chosen,
            "rejected_scores": rejected, "chosen_reward": reward[0], "rejected_reward": reward[1]}


# Helpfulness (the pairs' objective) always favours the chosen response; the others need not.
ROWS = [
    _row(0, [NAN, 4, 2, 3], [NAN, 2, 4, 3]),   # gaps on (correctness, coherence): (−2, 0)
    _row(1, [NAN, 3, 4, 1], [NAN, 1, 2, 2]),   # (+2, −1)
    _row(2, [NAN, 4, 3, 4], [NAN, 0, 3, NAN]),  # (0, unscored on the rejected response: adds nothing)
]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from amopo.models import load_model

    return load_model(str(tiny_model_dir))


def _logits(model, cfg: TrainConfig, rows) -> tuple[torch.Tensor, dict]:
    """Per-example losses and metric sums of one micro-step, with a reference of log-prob 0, so that
    β·Δ_s = the step's reward of s."""
    def zero_reference(rows, batch):
        return torch.zeros(2 * len(rows))

    with torch.no_grad():
        per_example, sums, _ = micro_step(cfg, model, rows, dimensions=DIMS, epoch=0, pad_id=0, device="cpu",
                                          reference_logps=zero_reference)
    return per_example, sums


@pytest.mark.parametrize("weight,margins", [
    # (1/w)·Σ_j ((1 − w)/2)·gap_j over correctness and coherence:
    (0.5, [2 * (0.25 * -2 + 0.25 * 0), 2 * (0.25 * 2 + 0.25 * -1), 2 * (0.25 * 0)]),        # −1, 0.5, 0
    (0.8, [1.25 * (0.1 * -2 + 0.1 * 0), 1.25 * (0.1 * 2 + 0.1 * -1), 0.0]),                  # −0.25, 0.125, 0
])
def test_margin_uses_the_other_dimensions_scaled_as_modpo(model, weight, margins):
    cfg = TrainConfig(objective="modpo", beta=0.1, modpo_weight=weight)
    for row, margin in zip(ROWS, margins):
        loss, sums = _logits(model, cfg, [row])
        # rewards/chosen = β·Δ_w with Δ = log π − 0; the loss's logit is (1/w)·β(Δ_w − Δ_l) − margin.
        logit = (sums["rewards/chosen/plain"] - sums["rewards/rejected/plain"]) / weight - margin
        assert loss.item() == pytest.approx(math.log1p(math.exp(-logit)), abs=1e-6), (row["id"], margin)
    # Helpfulness favours every chosen response, yet the first pair's margin is negative.
    assert margins[0] < 0


def test_explicit_margin_dimensions_and_reward_score():
    from amopo.train.modpo import margin_gaps, margin_spec

    spec = margin_spec("helpfulness", ["coherence"], 0.5, DIMS)
    assert spec.dimensions == ("coherence",)
    assert margin_gaps(ROWS[:2], DIMS, spec).tolist() == [0.5 * (3 - 3), 0.5 * (1 - 2)]   # w_{−k}ᵀ gap
    # A pair whose responses both carry reward_score takes its margin from it, weight 1 − w_k.
    with_reward = _row(3, [NAN, 4, 0, 0], [NAN, 1, 4, 4], reward=(0.2, 1.4))
    assert margin_gaps([with_reward], DIMS, margin_spec("helpfulness", None, 0.75, DIMS)).tolist() == \
        pytest.approx([0.25 * (0.2 - 1.4)])


@pytest.mark.parametrize("objective,margin,message", [
    ("helpfulness", ["helpfulness"], "modpo_margin names 'helpfulness', the objective being optimised"),
    ("helpfulness", ["overall"], "'overall' is holistic"),
    ("helpfulness", ["verbosity"], "'verbosity' is not among the data's dimensions (overall, helpfulness, "
                                   "correctness, coherence)"),
])
def test_bad_margin_dimensions_are_refused(objective, margin, message):
    from amopo.train.modpo import margin_spec

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        margin_spec(objective, margin, 0.5, DIMS)


def test_a_pair_without_another_objective_is_refused():
    from amopo.train.modpo import margin_gaps, margin_spec

    # Row 2's rejected response has no coherence score and neither response a reward_score.
    spec = margin_spec("helpfulness", ["coherence"], 0.5, DIMS)
    with pytest.raises(ConfigError, match=r"pair 2 of DATA/train.jsonl \(line 3\).*reward_score.*coherence"):
        margin_gaps(ROWS, DIMS, spec, where="DATA/train.jsonl")


def test_modpo_run_without_another_scored_dimension_is_refused(tiny_model_dir, mlflow_uri, tmp_path):
    from amopo.data.prepare import PrepareConfig, prepare
    from amopo.train.loop import train

    src = write_jsonl(tmp_path / "train.jsonl", answer_pairs(8))
    prepare(PrepareConfig(data_source=str(src), output=str(tmp_path / "data"), dimensions=["overall", "helpfulness"],
                          eval_fraction=0.0), echo=None)
    with pytest.raises(ConfigError) as err:
        train(train_config(tmp_path / "data", tiny_model_dir, tmp_path / "run", mlflow_uri, objective="modpo"))
    text = str(err.value)
    for part in ("modpo", "helpfulness", "modpo_objective", "reward_score", "overall, helpfulness",
                 str(tmp_path / "data" / "train.jsonl")):
        assert part in text, (part, text)
    assert not (tmp_path / "run" / "model").exists()
