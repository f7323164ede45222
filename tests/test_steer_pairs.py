"""prepare --steer-both-orientations: reversed steering pairs (this project's extension of AMoPO)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from amopo.config import add_arguments, resolve
from amopo.data.dimensions import KNOWN
from amopo.data.orientations import add_reversed, steering_dimension
from amopo.data.prepare import PrepareConfig, prepare
from amopo.data.records import PreferencePair, Response
from amopo.data.tokenize import load_tokenized
from amopo.errors import ConfigError

DIMS = ["overall", "helpfulness", "verbosity", "complexity"]
SAME = {"helpfulness": 4, "correctness": 4, "complexity": 1, "verbosity": 1}


def record(i: int, chosen: dict, rejected: dict, *, tag: str = "") -> dict:
    return {"prompt": f"Question {i}{tag}: tell me about topic {i}.",
            "chosen": {"response": f"Answer {i}, the long and detailed one.", **SAME, **chosen},
            "rejected": {"response": f"Answer {i}.", **SAME, **rejected}}


def mixed_records() -> list[dict]:
    """Two verbosity pairs, one complexity pair, and pairs that must not be reversed."""
    return [
        record(0, {"verbosity": 3}, {}),                               # verbosity, gap 2
        record(1, {"verbosity": 2}, {}),                               # verbosity, gap 1
        record(2, {"complexity": 3}, {}),                              # complexity
        record(3, {"helpfulness": 4}, {"helpfulness": 1}),             # quality only: not steerable
        record(4, {"verbosity": 3}, {"correctness": 3}),               # also differs on correctness
        record(5, {"verbosity": 3, "complexity": 3}, {}),              # differs on both steerable ones
        record(6, {}, {"helpfulness": 3, "verbosity": 0}),             # chosen is more helpful too
    ]


def write_records(path: Path, recs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def run(tmp_path: Path, recs: list[dict], name: str = "out", eval_recs: list[dict] | None = None, **options) -> dict:
    src = write_records(tmp_path / f"{name}-train.jsonl", recs)
    held = write_records(tmp_path / f"{name}-eval.jsonl", eval_recs or recs[:1])
    return prepare(PrepareConfig(data_source=str(src), eval_source=str(held), output=str(tmp_path / name),
                                 dimensions=DIMS, **options), echo=None)


def test_reverses_only_pairs_that_differ_mainly_on_a_steering_dimension(tmp_path):
    recs = mixed_records()
    manifest = run(tmp_path, recs, steer_both_orientations=True)
    out = lines(tmp_path / "out" / "train.jsonl")
    assert out[: len(recs)] == recs  # the originals first, unchanged
    added = out[len(recs):]
    assert [r["prompt"] for r in added] == [recs[i]["prompt"] for i in (0, 1, 2)]
    for rev, i in zip(added, (0, 1, 2)):
        orig = out[i]
        assert rev["chosen"] == orig["rejected"] and rev["rejected"] == orig["chosen"]  # swapped
    assert manifest["counts"]["train"] == len(recs) + 3
    assert manifest["steer"] == {
        "dimensions": ["verbosity", "complexity"], "min_gap": 1.0, "tolerance": 0.0, "pairs_only": False,
        "splits": {"train": {"pairs": len(recs), "added": 3, "reversed": {"verbosity": 2, "complexity": 1},
                             "already_present": 0},
                   "eval": None}}
    assert json.loads((tmp_path / "out" / "prepare.json").read_text())["steer"] == manifest["steer"]
    assert len(lines(tmp_path / "out" / "eval.jsonl")) == 1  # eval untouched by default


def test_the_reversed_prompt_shows_the_low_level(tmp_path, tiny_tokenizer):
    run(tmp_path, [record(0, {"verbosity": 3}, {})], steer_both_orientations=True)
    rows = load_tokenized(tmp_path / "out", tiny_tokenizer, "train", max_length=256, show_progress=False).rows
    assert len(rows) == 2
    k = DIMS.index("verbosity")
    original, reversed_ = (tiny_tokenizer.decode(r["prompt_ids"][k]) for r in rows)
    assert "verbosity level 3 on a scale of 0 to 4" in original
    assert "verbosity level 1 on a scale of 0 to 4" in reversed_
    assert rows[1]["chosen_scores"][k] == 1.0 and rows[1]["rejected_scores"][k] == 3.0
    assert rows[1]["chosen_ids"] == rows[0]["rejected_ids"] and rows[1]["rejected_ids"] == rows[0]["chosen_ids"]
    # every other dimension shows the same score as the original (equal there), holistic ones alike
    for j, name in enumerate(DIMS):
        if name != "verbosity":
            assert rows[1]["prompt_ids"][j] == rows[0]["prompt_ids"][j], name


def test_off_by_default_changes_nothing(tmp_path):
    recs = mixed_records()
    default = run(tmp_path, recs, "default")
    off = run(tmp_path, recs, "off", steer_both_orientations=False)
    for name in ("train.jsonl", "eval.jsonl"):
        assert (tmp_path / "default" / name).read_bytes() == (tmp_path / "off" / name).read_bytes()
    assert lines(tmp_path / "default" / "train.jsonl") == recs
    assert default["steer"] is None and off["steer"] is None
    assert default["counts"] == {"train": len(recs), "eval": 1, "skipped": 0}
    assert default["config"]["steer_both_orientations"] is False


def test_steer_eval_dimension_choice_and_tolerance(tmp_path):
    recs = mixed_records()
    manifest = run(tmp_path, recs, "a", eval_recs=recs, steer_both_orientations=True, steer_eval=True)
    assert manifest["steer"]["splits"]["eval"]["added"] == 3 and manifest["counts"]["eval"] == len(recs) + 3
    manifest = run(tmp_path, recs, "b", steer_both_orientations=True, steer_dimensions=["complexity"])
    assert manifest["steer"]["splits"]["train"]["reversed"] == {"complexity": 1}
    # a tolerance of 1 also admits the pair one point apart on correctness; a gap of 2 drops the gap-1 pair
    manifest = run(tmp_path, recs, "c", steer_both_orientations=True, steer_tolerance=1.0, steer_min_gap=2.0)
    assert manifest["steer"]["splits"]["train"]["reversed"] == {"verbosity": 2, "complexity": 1}
    assert [r["prompt"] for r in lines(tmp_path / "c" / "train.jsonl")[len(recs):]] == [
        recs[i]["prompt"] for i in (0, 2, 4)]


def test_steering_dimension_needs_every_prepared_score_on_both_sides():
    dims = [KNOWN[n] for n in DIMS]
    steer = [KNOWN["verbosity"], KNOWN["complexity"]]
    pair = PreferencePair("p", Response("long", {**SAME, "verbosity": 3}), Response("short", dict(SAME)))
    assert steering_dimension(pair, steer, dims) == "verbosity"
    unscored = PreferencePair("p", pair.chosen, Response("short", {"verbosity": 1, "helpfulness": 4}))
    assert steering_dimension(unscored, steer, dims) is None  # no complexity on the rejected side
    # a reversed pair already in the data is not added twice
    both, report = add_reversed([pair, PreferencePair("p", pair.rejected, pair.chosen)], steer, dims)
    assert len(both) == 2 and report.added == 0 and report.already_present == 2


def test_bad_steer_options_write_nothing(tmp_path):
    recs = mixed_records()
    with pytest.raises(ConfigError, match="none of the prepared dimensions .* is steerable"):
        prepare(PrepareConfig(data_source=str(write_records(tmp_path / "in.jsonl", recs)), output=str(tmp_path / "o"),
                              dimensions=["overall", "helpfulness"], steer_both_orientations=True), echo=None)
    for options, message in (({"steer_dimensions": ["overall"]}, "not a scored dimension being prepared"),
                             ({"steer_dimensions": ["correctness"]}, "not a scored dimension being prepared")):
        with pytest.raises(ConfigError, match=message):
            run(tmp_path, recs, "o", steer_both_orientations=True, **options)
    assert not (tmp_path / "o").exists()
    for bad in ({"steer_eval": True}, {"steer_dimensions": ["verbosity"]},
                {"steer_both_orientations": True, "steer_tolerance": 1.0},
                {"steer_both_orientations": True, "steer_min_gap": 0.0},
                {"steer_both_orientations": True, "score_source": "scale-max"}):
        with pytest.raises(ConfigError):
            resolve(PrepareConfig, None, bad)


def test_cli_flags():
    parser = argparse.ArgumentParser()
    add_arguments(parser, PrepareConfig)
    flags = vars(parser.parse_args(["--steer-both-orientations", "--steer-dimensions", "verbosity",
                                    "--steer-tolerance", "0.5"]))
    cfg = resolve(PrepareConfig, None, flags)
    assert (cfg.steer_both_orientations, cfg.steer_dimensions, cfg.steer_tolerance, cfg.steer_eval) == (
        True, ["verbosity"], 0.5, False)
    assert "This project's steering extension" in parser.format_help()


def test_sample_data_reverses_exactly_its_steerable_train_pairs(tmp_path):
    from amopo.sample_data import build as sample_build

    manifest = prepare(PrepareConfig(output=str(tmp_path / "o"), dimensions=DIMS, steer_both_orientations=True),
                       echo=None)
    labels = sample_build.build_with_labels()
    expected = {d: sum(lab["steer"] == d for _, lab in labels["train"]) for d in ("verbosity", "complexity")}
    train = manifest["steer"]["splits"]["train"]
    assert train["reversed"] == expected and min(expected.values()) > 0
    assert manifest["counts"]["train"] == len(labels["train"]) + train["added"]
    assert manifest["steer"]["splits"]["eval"] is None and manifest["counts"]["eval"] == len(labels["test"])


def test_steer_pairs_only_keeps_the_steerable_train_pairs_and_their_reversals(tmp_path):
    manifest = run(tmp_path, mixed_records(), steer_both_orientations=True, steer_pairs_only=True,
                   eval_recs=mixed_records())
    train = lines(tmp_path / "out" / "train.jsonl")
    assert [r["prompt"] for r in train] == [f"Question {i}: tell me about topic {i}." for i in (0, 1, 2, 0, 1, 2)]
    assert manifest["counts"] == {"train": 6, "eval": 7, "skipped": 0}   # eval is kept whole
    assert manifest["steer"]["pairs_only"] is True and manifest["steer"]["splits"]["train"]["pairs"] == 3


def test_steer_pairs_only_on_the_sample_keeps_its_verbosity_pairs_both_ways(tmp_path):
    """The data of the steering recipe (docs/steering.md): the sample's verbosity pairs and their reversals."""
    from amopo.sample_data import build as sample_build

    manifest = prepare(PrepareConfig(output=str(tmp_path / "v"), dimensions=["verbosity"],
                                     steer_both_orientations=True, steer_pairs_only=True), echo=None)
    verbosity = sum(lab["steer"] == "verbosity" for _, lab in sample_build.build_with_labels()["train"])
    assert manifest["counts"]["train"] == 2 * verbosity and verbosity > 50
    train = lines(tmp_path / "v" / "train.jsonl")
    for original, flipped in zip(train[:verbosity], train[verbosity:]):
        assert original["chosen"]["verbosity"] > original["rejected"]["verbosity"]
        assert (flipped["chosen"], flipped["rejected"]) == (original["rejected"], original["chosen"])


def test_steer_pairs_only_with_no_steerable_pair_is_an_error_and_writes_nothing(tmp_path):
    from amopo.errors import DataError

    with pytest.raises(DataError, match="no train pair differs mainly on verbosity"):
        run(tmp_path, [record(3, {"helpfulness": 4}, {"helpfulness": 1})], "none",
            steer_both_orientations=True, steer_pairs_only=True, steer_dimensions=["verbosity"])
    assert not (tmp_path / "none").exists()
    with pytest.raises(ConfigError, match="steer_pairs_only' is set but steer_both_orientations is off"):
        resolve(PrepareConfig, None, {"steer_pairs_only": True})
