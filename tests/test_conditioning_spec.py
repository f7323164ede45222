"""The trained model folder carries its conditioning: from ``model/amopo_conditioning.json`` alone a
consumer rebuilds exactly the x*_k training used, and bad targets are refused naming what is allowed."""

from __future__ import annotations

import json

import pytest

from amopo.data.dimensions import KNOWN
from amopo.data.prompts import CONDITIONING_FILE, conditioning_spec, render_prompt, steered_user_text
from amopo.errors import SteeringError
from amopo.train.loop import train
from tests.helpers.training import train_config


@pytest.fixture(scope="module")
def trained(prepared, tiny_model_dir, mlflow_uri, tmp_path_factory):
    out = tmp_path_factory.mktemp("spec") / "amopo"
    train(train_config(prepared, tiny_model_dir, out, mlflow_uri))
    return out / "model"


def test_an_amopo_model_folder_records_dimensions_wording_and_placement(trained, prepared):
    spec = json.loads((trained / CONDITIONING_FILE).read_text())
    manifest = json.loads((prepared / "prepare.json").read_text())
    assert spec["dimensions"] == manifest["dimensions"]
    assert [d["name"] for d in spec["dimensions"]] == ["overall", "helpfulness", "correctness",
                                                       "instruction_following"]
    assert spec["prefix_version"] == 1 and "{score}" in spec["scored_prefix"] and spec["placement"]


def test_the_spec_rebuilds_the_training_prompts_token_for_token(trained, prepared, tiny_tokenizer):
    from amopo.data.tokenize import load_tokenized

    spec = json.loads((trained / CONDITIONING_FILE).read_text())
    split = load_tokenized(prepared, tiny_tokenizer, "train", max_length=128)
    records = [json.loads(line) for line in (prepared / "train.jsonl").read_text().splitlines()]
    for row in list(split.rows)[:4]:
        record = records[row["id"]]
        for k, dim in enumerate(spec["dimensions"]):
            level = record["chosen"].get(dim["name"]) if dim["low"] is not None else None
            text = steered_user_text(spec, {dim["name"]: level}, record["prompt"])
            ids = tiny_tokenizer(render_prompt(tiny_tokenizer, text), add_special_tokens=False)["input_ids"]
            assert list(ids) == list(row["prompt_ids"][k]), (row["id"], dim["name"])
        plain = tiny_tokenizer(render_prompt(tiny_tokenizer, steered_user_text(spec, {}, record["prompt"])),
                               add_special_tokens=False)["input_ids"]
        assert list(plain) == list(row["plain_prompt_ids"])


def test_a_baseline_model_has_no_conditioning(prepared, tiny_model_dir, mlflow_uri, tmp_path):
    train(train_config(prepared, tiny_model_dir, tmp_path / "simpo", mlflow_uri, objective="simpo", max_steps=1))
    assert not (tmp_path / "simpo" / "model" / CONDITIONING_FILE).exists()
    with pytest.raises(SteeringError, match="no dimension conditioning"):
        steered_user_text(None, {"verbosity": 1}, "Hi")


SPEC = conditioning_spec([KNOWN[n] for n in ("overall", "helpfulness", "verbosity")])


def test_several_targets_join_in_the_models_dimension_order():
    text = steered_user_text(SPEC, {"verbosity": 1, "overall": None}, "Hi")
    overall, verbosity, user = text.split("\n", 1)[0], text.split("\n")[1], text.rsplit("\n\n", 1)[1]
    assert overall.startswith("Respond with the best overall quality")
    assert verbosity.startswith("Respond at verbosity level 1 on a scale of 0 to 4")
    assert user == "Hi"
    assert steered_user_text(SPEC, None, "Hi") == steered_user_text(SPEC, {}, "Hi") == "Hi"


@pytest.mark.parametrize("targets, words", [
    ({"tone": 2}, "unknown dimension(s) tone; this model steers: overall (holistic: null); helpfulness (0 to 4)"),
    ({"verbosity": 5}, "level 5 is not a number from 0 to 4"),
    ({"verbosity": -1}, "level -1 is not a number from 0 to 4"),
    ({"verbosity": "high"}, "level 'high' is not a number"),
    ({"verbosity": True}, "level True is not a number"),
    ({"verbosity": float("nan")}, "level nan is not a number"),
    ({"overall": 3}, "'overall' is holistic and takes no level"),
    ([("verbosity", 1)], "must be an object"),
])
def test_bad_targets_name_what_is_allowed(targets, words):
    with pytest.raises(SteeringError) as err:
        steered_user_text(SPEC, targets, "Hi")
    assert words in str(err.value)
