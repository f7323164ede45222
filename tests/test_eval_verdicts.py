"""Reading verdicts out of judge replies (garbage included), and the versioned judge prompt files."""

from __future__ import annotations

import shutil

import pytest

from amopo.errors import ConfigError
from amopo.evaluate.judge_prompts import SHIPPED_DIR, fill, load_prompt_set
from amopo.evaluate.verdicts import parse_pairwise, parse_rating


@pytest.mark.parametrize("reply, expected", [
    ("A", 1.0), ("B", 0.0), ("[[A]]", 1.0), ("Final verdict: [[B]]", 0.0), ("**A**", 1.0), ("B.\n", 0.0),
    ("Answer: B", 0.0), ("Verdict: A", 1.0), ("The better answer is B.", 0.0),
    ("Answer A is better because it is shorter.", 1.0), ("Response B wins.", 0.0),
    ("tie", 0.5), ("[[tie]]", 0.5),
])
def test_pairwise_verdicts(reply, expected):
    assert parse_pairwise(reply) == expected


@pytest.mark.parametrize("reply", [
    None, "", "   ", "a", "I cannot decide.", "A better answer would mention the date.",   # article, not a label
    "Both A and B are fine", "[[A]] or [[B]]", "lorem ipsum A B", "\x00\x01\ufffd", "C", "[[C]]",
    "Answer A is better. Answer B is better.",
])
def test_pairwise_garbage_is_unparseable(reply):
    assert parse_pairwise(reply) is None


def test_pairwise_custom_labels():
    assert parse_pairwise("[[first]]", ("first", "second")) == 1.0
    assert parse_pairwise("second", ("first", "second")) == 0.0


@pytest.mark.parametrize("reply, expected", [
    ("4", 4.0), ("[[5]]", 5.0), ("4/5", 4.0), ("**3**", 3.0), ("Rating: 2", 2.0), ("Score is 4", 4.0),
    ("5.", 5.0), ("I'd give it a score of 1", 1.0),
])
def test_ratings(reply, expected):
    assert parse_rating(reply) == expected


@pytest.mark.parametrize("reply", [None, "", "6", "0", "4.5", "garbage", "I would say 3 or 4",
                                   "Rating: 3. Score: 4", "[[9]]", "A"])
def test_rating_garbage_is_unparseable(reply):
    assert parse_rating(reply) is None


def test_shipped_prompt_set_and_its_identity():
    prompts = load_prompt_set("v1")
    assert prompts.pairwise.labels == ("A", "B") and prompts.rating.labels == ("1", "2", "3", "4", "5")
    assert prompts.identity["prompts"] == "v1" and len(prompts.identity["prompts_sha256"]) == 64
    messages = prompts.pairwise.messages(instruction="Say hi.", output_a="hi", output_b="hello")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "[Answer A]\nhi\n\n[Answer B]\nhello" in messages[1]["content"]
    assert "1 = ignores" in prompts.rubric("helpfulness")
    assert "the user's need" not in prompts.rubric("coherence")
    assert "freedom from fabricated" in prompts.rubric("truthfulness")   # registry description as fallback
    with pytest.raises(ConfigError, match="no rubric for dimension 'made_up'"):
        prompts.rubric("made_up")


def test_fill_does_not_reread_inserted_text():
    # An answer that contains a placeholder must stay as written.
    assert fill("{output_a} | {output_b}", {"output_a": "{output_b}", "output_b": "x"}) == "{output_b} | x"
    assert fill("{unknown} {a}", {"a": "1"}) == "{unknown} 1"


def test_own_prompt_folder_is_versioned_and_checked(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for kind in ("pairwise", "rating", "rubrics"):
        shutil.copy(SHIPPED_DIR / f"{kind}_v1.yaml", folder / f"{kind}_v7.yaml")
    prompts = load_prompt_set(str(folder))
    assert prompts.identity["prompts"] == "v7"
    assert prompts.identity["prompts_sha256"] == load_prompt_set("v1").identity["prompts_sha256"]
    text = (folder / "pairwise_v7.yaml").read_text().replace("{output_b}", "(second)")
    (folder / "pairwise_v7.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"pairwise_v7.yaml: field 'user' lacks placeholder\(s\) \{output_b\}"):
        load_prompt_set(str(folder))
    with pytest.raises(ConfigError, match="neither a folder nor a shipped version"):
        load_prompt_set("v99")
