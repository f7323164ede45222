"""Pair-building rules for raw HelpSteer2 and UltraFeedback."""

from __future__ import annotations

import json
import random

import pytest

from amopo.data import helpsteer2, ultrafeedback
from amopo.data.records import Response
from amopo.errors import DataError


def hs(help_, corr=2, coh=2, comp=2, verb=2, text="r") -> Response:
    return Response(text, {"helpfulness": help_, "correctness": corr, "coherence": coh, "complexity": comp,
                           "verbosity": verb})


def test_helpsteer2_higher_helpfulness_wins():
    a, b = hs(1, text="a"), hs(3, text="b")
    assert helpsteer2.choose(a, b) == (b, a)
    assert helpsteer2.choose(b, a) == (b, a)


def test_helpsteer2_tie_broken_by_sum_of_other_attributes():
    a, b = hs(2, corr=4, text="a"), hs(2, corr=1, verb=4, text="b")  # sums 10 vs 9
    assert helpsteer2.choose(a, b, "sum-others") == (a, b)
    assert helpsteer2.choose(b, a, "sum-others") == (a, b)
    assert helpsteer2.choose(a, b, "drop") is None


def test_helpsteer2_full_tie_dropped():
    assert helpsteer2.choose(hs(2, corr=3, coh=1), hs(2, corr=1, coh=3)) is None


def test_helpsteer2_file_rules(data_dir):
    path = str(data_dir / "helpsteer2_small.jsonl")
    default = helpsteer2.read_helpsteer2(path)
    assert [(p.prompt, p.chosen.text) for p in default.pairs] == [
        ("What is the capital of France?", "Paris is the capital of France."),
        ("Explain why the sky is blue.", "Sunlight scatters off air molecules; blue light scatters the most.")]
    assert default.pairs[0].rejected.scores["helpfulness"] == 1.0
    dropped = helpsteer2.read_helpsteer2(path, tie_rule="drop")
    assert len(dropped.pairs) == 1 and dropped.stats["ties_dropped"] == 2
    assert len(helpsteer2.read_helpsteer2(path, max_records=1).pairs) == 1


def test_helpsteer2_groups_by_prompt_and_pairs_in_order(tmp_path):
    rows = [{"prompt": p, "response": r, "helpfulness": h, "correctness": 2, "coherence": 2, "complexity": 2,
             "verbosity": 2} for p, r, h in [("P", "r1", 1), ("Q", "q1", 4), ("P", "r2", 3), ("Q", "q2", 0),
                                             ("P", "r3", 2), ("P", "r4", 0)]]
    path = tmp_path / "hs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = helpsteer2.read_helpsteer2(str(path))
    assert [(p.chosen.text, p.rejected.text) for p in result.pairs] == [("r2", "r1"), ("r3", "r4"), ("q1", "q2")]
    assert result.pairs[0].source == f"{path}:1"


@pytest.mark.parametrize("row, fieldname, reason", [
    ({"prompt": "P", "response": "r", "helpfulness": 2, "correctness": 2, "coherence": 2, "complexity": 2},
     "verbosity", "missing_field"),
    ({"prompt": "P", "response": "r", "helpfulness": "2", "correctness": 2, "coherence": 2, "complexity": 2,
      "verbosity": 2}, "helpfulness", "bad_score"),
    ({"prompt": "P", "response": "r", "helpfulness": 5, "correctness": 2, "coherence": 2, "complexity": 2,
      "verbosity": 2}, "helpfulness", "score_out_of_range"),
    ({"prompt": "P", "response": " ", "helpfulness": 1, "correctness": 2, "coherence": 2, "complexity": 2,
      "verbosity": 2}, "response", "empty_text"),
])
def test_helpsteer2_bad_rows(tmp_path, row, fieldname, reason):
    good = {"prompt": "P", "response": "fine", "helpfulness": 3, "correctness": 2, "coherence": 2,
            "complexity": 2, "verbosity": 2}
    path = tmp_path / "hs.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError) as info:
        helpsteer2.read_helpsteer2(str(path))
    assert f"{path}:2 field '{fieldname}'" in str(info.value) and info.value.reason == reason
    with pytest.raises(DataError, match="no valid preference pair"):  # the good row is left unpaired
        helpsteer2.read_helpsteer2(str(path), skip_invalid=True)


def uf(*ratings, text=None) -> dict:
    names = ultrafeedback.ASPECTS
    return {"response": text or f"resp {ratings}",
            "annotations": {a: {"Rating": str(r), "Rationale": "."} for a, r in zip(names, ratings)}}


def uf_row(*completions, instruction="Q") -> dict:
    return {"instruction": instruction, "completions": list(completions)}


def _parse(row):
    return ultrafeedback.parse_row(row, file="f", line=1)[1]


def test_ultrafeedback_highest_mean_vs_lowest():
    comps = _parse(uf_row(uf(3, 3, 3, 3, text="mid"), uf(5, 5, 4, 4, text="top"), uf(1, 2, 1, 2, text="low")))
    chosen, rejected = ultrafeedback.choose(comps, "lowest")
    assert (chosen.text, rejected.text) == ("top", "low")
    assert chosen.scores == {"instruction_following": 5, "honesty": 5, "truthfulness": 4, "helpfulness": 4}


def test_ultrafeedback_na_ratings_are_ignored():
    # "top" rates 5 on its only rated aspects; its N/A ratings must not count as zeros.
    comps = _parse(uf_row(uf("N/A", 5, "N/A", 5, text="top"), uf(4, 4, 4, 4, text="four"),
                          uf("N/A", "N/A", "N/A", "N/A", text="unrated")))
    chosen, rejected = ultrafeedback.choose(comps, "lowest")
    assert (chosen.text, rejected.text) == ("top", "four")
    assert chosen.scores == {"honesty": 5.0, "helpfulness": 5.0}


def test_ultrafeedback_equal_means_dropped():
    comps = _parse(uf_row(uf(4, 4, 4, 4, text="a"), uf(5, 3, 4, 4, text="b")))
    assert ultrafeedback.choose(comps, "lowest") is None
    assert ultrafeedback.choose(comps, "random", random.Random(0)) is None


def test_ultrafeedback_random_rejected_is_seeded_and_strictly_worse():
    comps = _parse(uf_row(uf(5, 5, 5, 5, text="top"), uf(5, 5, 5, 5, text="also top"),
                          *[uf(i, i, i, i, text=f"r{i}") for i in (1, 2, 3, 4)]))
    picks = {ultrafeedback.choose(comps, "random", random.Random(s))[1].text for s in range(40)}
    assert picks == {"r1", "r2", "r3", "r4"}
    again = [ultrafeedback.choose(comps, "random", random.Random(7))[1].text for _ in range(3)]
    assert len(set(again)) == 1


def test_ultrafeedback_file_random_is_deterministic(data_dir):
    path = str(data_dir / "ultrafeedback_small.jsonl")
    a = ultrafeedback.read_ultrafeedback(path, uf_rejected="random", seed=3)
    b = ultrafeedback.read_ultrafeedback(path, uf_rejected="random", seed=3)
    assert [p.to_json() for p in a.pairs] == [p.to_json() for p in b.pairs]
    assert a.pairs[0].rejected.text in {"Carrot.", "Pear, plum.", "Fruits are tasty."}


@pytest.mark.parametrize("completion, fieldname, reason", [
    ({"response": "x", "annotations": {"honesty": {"Rating": "great"}}},
     "completions[1].annotations.honesty.Rating", "bad_score"),
    ({"response": "x", "annotations": {"honesty": {"Rating": "7"}}},
     "completions[1].annotations.honesty.Rating", "score_out_of_range"),
    ({"response": 3, "annotations": {}}, "completions[1].response", "bad_type"),
])
def test_ultrafeedback_bad_rows(tmp_path, completion, fieldname, reason):
    path = tmp_path / "uf.jsonl"
    path.write_text(json.dumps(uf_row(uf(5, 5, 5, 5), uf(1, 1, 1, 1))) + "\n"
                    + json.dumps(uf_row(uf(5, 5, 5, 5), completion, instruction="R")) + "\n")
    with pytest.raises(DataError) as info:
        ultrafeedback.read_ultrafeedback(str(path))
    assert f"{path}:2 field '{fieldname}'" in str(info.value) and info.value.reason == reason
    kept = ultrafeedback.read_ultrafeedback(str(path), skip_invalid=True)
    assert len(kept.pairs) == 1 and kept.skipped.counts == {reason: 1}


def test_ultrafeedback_missing_instruction(tmp_path):
    path = tmp_path / "uf.jsonl"
    path.write_text(json.dumps({"completions": []}) + "\n")
    with pytest.raises(DataError, match=r"uf.jsonl:1 field 'instruction': missing column"):
        ultrafeedback.read_ultrafeedback(str(path))
