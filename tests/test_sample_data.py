"""The shipped sample preference data: fresh, well-formed, consistent, and properly split; its
steerable pairs (two correct responses differing on one dimension) are in both splits."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from amopo.sample_data import SAMPLE_DIR, sample_path
from amopo.sample_data import build as sample_build

SPLITS = ("train", "test")
RESPONSE_KEYS = ("response", "helpfulness", "correctness", "coherence", "complexity", "verbosity",
                 "instruction_following")
SCORE_RANGES = {"helpfulness": (0, 4), "correctness": (0, 4), "coherence": (0, 4),
                "complexity": (0, 4), "verbosity": (0, 4), "instruction_following": (1, 5)}
FLAWS = ("wrong_fact", "ignores_format", "evasive", "rambling", "incomplete")
STEER = ("verbosity", "complexity")
TRAIN_RANGE, TEST_RANGE = (450, 550), (80, 110)


@pytest.fixture(scope="module")
def labelled():
    return sample_build.build_with_labels()


@pytest.fixture(scope="module")
def shipped():
    out = {}
    for split in SPLITS:
        raw = sample_path(split).read_bytes()
        text = raw.decode("utf-8")  # strict: invalid UTF-8 fails here
        out[split] = [json.loads(line) for line in text.splitlines()]
    return out


def _words(text: str) -> int:
    return len(text.split())


def _sentences(text: str) -> int:
    return len(re.findall(r"[.!?]+(?=\s|$)", text))


def _obeys(template: str, text: str) -> bool:
    """An independent reading of each template's format instruction."""
    if template == "short":
        return "\n" not in text and _words(text) <= 3
    if template == "one_sentence":
        return "\n" not in text and _sentences(text) == 1
    if template == "under_20":
        return _words(text) < 20
    if template == "two_sentences":
        return "\n" not in text and _sentences(text) == 2
    if template == "bullets":
        lines = text.split("\n")
        return len(lines) == 3 and all(re.fullmatch(r"- \S.*", line) for line in lines)
    if template == "yes_no":
        return re.match(r"(Yes|No)\b\W*\s+\w", text) is not None
    raise AssertionError(f"unknown template {template}")


def test_sample_path():
    assert sample_path("train") == SAMPLE_DIR / "train.jsonl"
    assert sample_path("test") == SAMPLE_DIR / "test.jsonl"
    assert sample_path("train").is_file() and sample_path("test").is_file()
    with pytest.raises(ValueError):
        sample_path("validation")


def test_committed_files_equal_build_output(shipped):
    built = sample_build.build()
    for split in SPLITS:
        assert sample_path(split).read_text(encoding="utf-8") == sample_build.render(built[split]), (
            f"{split}.jsonl is stale: run python -m amopo.sample_data.build")
        assert shipped[split] == built[split]
    assert sample_build.main(["--check"]) == 0


def test_build_is_deterministic_and_seeded(labelled):
    assert sample_build.build(seed=0) == sample_build.build(seed=0)
    assert sample_build.build() == {s: [r for r, _ in pairs] for s, pairs in labelled.items()}
    assert sample_build.build(seed=1) != sample_build.build(seed=0)


def test_write_round_trips(tmp_path):
    paths = sample_build.write(seed=0, directory=tmp_path)
    for split in SPLITS:
        assert paths[split].read_bytes() == sample_path(split).read_bytes()


def test_record_schema(shipped):
    for split, records in shipped.items():
        assert records, split
        for i, rec in enumerate(records):
            where = f"{split}:{i + 1}"
            assert list(rec) == ["prompt", "chosen", "rejected"], where
            assert isinstance(rec["prompt"], str) and rec["prompt"].strip() == rec["prompt"] != ""
            for side in ("chosen", "rejected"):
                resp = rec[side]
                assert tuple(resp) == RESPONSE_KEYS, where
                assert isinstance(resp["response"], str) and resp["response"].strip(), where
                assert resp["response"] == resp["response"].strip(), where
                for key, (lo, hi) in SCORE_RANGES.items():
                    value = resp[key]
                    assert type(value) is int and lo <= value <= hi, f"{where} {side}.{key}={value!r}"


def test_readable_by_the_project_record_type(shipped):
    from amopo.data.records import PreferencePair, Response

    rec = shipped["train"][0]
    pair = PreferencePair(
        rec["prompt"],
        Response(rec["chosen"]["response"], {k: rec["chosen"][k] for k in SCORE_RANGES}),
        Response(rec["rejected"]["response"], {k: rec["rejected"][k] for k in SCORE_RANGES}))
    assert pair.to_json() == rec


def test_chosen_beats_rejected(shipped):
    others = [k for k in SCORE_RANGES if k != "helpfulness"]
    ties = 0
    for split, records in shipped.items():
        for i, rec in enumerate(records):
            c, r = rec["chosen"], rec["rejected"]
            assert c["response"] != r["response"], f"{split}:{i + 1}"
            if c["helpfulness"] == r["helpfulness"]:
                ties += 1
                assert sum(c[k] for k in others) > sum(r[k] for k in others), f"{split}:{i + 1}"
            else:
                assert c["helpfulness"] > r["helpfulness"], f"{split}:{i + 1}"
    assert ties > 0  # the tie-break rule is exercised, not just the helpfulness gap


def test_no_duplicates_and_no_prompt_shared_between_splits(shipped):
    prompts = {s: [r["prompt"] for r in recs] for s, recs in shipped.items()}
    for split in SPLITS:
        assert len(set(prompts[split])) == len(prompts[split]), f"duplicate prompt in {split}"
    assert not set(prompts["train"]) & set(prompts["test"])
    triples = [json.dumps(r, sort_keys=True) for recs in shipped.values() for r in recs]
    assert len(set(triples)) == len(triples)


def test_split_by_topic_and_sizes(labelled):
    topics = {s: {lab["topic"] for _, lab in pairs} for s, pairs in labelled.items()}
    assert not topics["train"] & topics["test"]
    assert len(topics["train"]) >= 60 and len(topics["test"]) >= 10
    assert TRAIN_RANGE[0] <= len(labelled["train"]) <= TRAIN_RANGE[1]
    assert TEST_RANGE[0] <= len(labelled["test"]) <= TEST_RANGE[1]
    share = len(topics["test"]) / (len(topics["train"]) + len(topics["test"]))
    assert 0.10 <= share <= 0.25
    domains = {s: {lab["domain"] for _, lab in pairs} for s, pairs in labelled.items()}
    assert len(domains["test"]) >= 8 and domains["test"] <= domains["train"]


def test_every_flaw_type_and_template_in_both_splits(labelled):
    for split, every in labelled.items():
        pairs = [(r, lab) for r, lab in every if lab["flaw"] is not None]
        flaws = Counter(lab["flaw"] for _, lab in pairs)
        assert set(flaws) == set(FLAWS), split
        assert min(flaws.values()) >= 0.15 * len(pairs), (split, flaws)
        templates = Counter(lab["template"] for _, lab in pairs)
        assert set(templates) == set(sample_build.TEMPLATES), split
        imperfect = sum(lab["chosen_imperfect"] for _, lab in pairs)
        assert 0.08 <= imperfect / len(pairs) <= 0.25, (split, imperfect)


def test_scores_are_consistent_with_the_text(labelled):
    for split, pairs in labelled.items():
        for rec, lab in pairs:
            if lab["steer"] is not None:
                continue  # test_steerable_pairs_in_both_splits
            where = f"{split} {lab}"
            c, r, template = rec["chosen"], rec["rejected"], lab["template"]
            if lab["chosen_imperfect"]:
                assert c["helpfulness"] == 3 and c["correctness"] == 4, where
                assert c["instruction_following"] <= 4, where
            else:
                assert (c["helpfulness"], c["correctness"], c["instruction_following"]) == (4, 4, 5), where
                assert _obeys(template, c["response"]), where
            flaw = lab["flaw"]
            if flaw == "wrong_fact":
                assert r["correctness"] <= 1 and r["helpfulness"] <= 1, where
                assert _obeys(template, r["response"]) and r["instruction_following"] >= 4, where
            elif flaw == "ignores_format":
                assert r["correctness"] == 4 and r["instruction_following"] <= 2, where
                assert not _obeys(template, r["response"]), where
            elif flaw == "evasive":
                assert r["helpfulness"] == 0 and r["correctness"] <= 1, where
                assert r["instruction_following"] <= 2, where
            elif flaw == "rambling":
                assert r["helpfulness"] <= 1 and r["verbosity"] == 4 and r["coherence"] <= 2, where
                assert r["instruction_following"] == 1 and not _obeys(template, r["response"]), where
                assert _words(r["response"]) > _words(c["response"]), where
            elif flaw == "incomplete":
                assert r["helpfulness"] <= 2 and 2 <= r["correctness"] <= 3, where
                assert _words(r["response"]) < _words(c["response"]), where
            else:
                raise AssertionError(where)


def test_scores_vary(shipped):
    records = [r for recs in shipped.values() for r in recs]
    for key in SCORE_RANGES:
        assert len({r["chosen"][key] for r in records} | {r["rejected"][key] for r in records}) >= 2
    for key in ("helpfulness", "complexity", "verbosity", "instruction_following"):
        assert len({r["chosen"][key] for r in records}) >= 2, key


def test_text_lengths(shipped):
    for split, records in shipped.items():
        for i, rec in enumerate(records):
            assert 3 <= _words(rec["prompt"]) <= 40, f"{split}:{i + 1}"
            for side in ("chosen", "rejected"):
                assert 1 <= _words(rec[side]["response"]) <= 60, f"{split}:{i + 1} {side}"
        chosen_words = sorted(_words(r["chosen"]["response"]) for r in records)
        assert chosen_words[len(chosen_words) // 2] <= 40  # most responses are short


def _mentions(text: str, term: str) -> bool:
    """``term`` (or its capitalised form, at a sentence start) as a whole word in ``text``."""
    return any(re.search(rf"(?<![\w.]){re.escape(t)}(?!\w)", text) for t in {term, term[:1].upper() + term[1:]})


def test_steerable_pairs_in_both_splits(labelled):
    facts = sample_build.topic_facts()
    instructions = [i for group in sample_build.INSTRUCTIONS.values() for i in group]
    for split, pairs in labelled.items():
        steer = [(rec, lab) for rec, lab in pairs if lab["steer"] is not None]
        counts = Counter(lab["steer"] for _, lab in steer)
        assert set(counts) == set(STEER) and min(counts.values()) >= 15, (split, counts)
        assert 0.2 <= len(steer) / len(pairs) <= 0.5, split
        # they follow the flawed pairs, which stay exactly where they were
        assert all(lab["steer"] is None for _, lab in pairs[: len(pairs) - len(steer)]), split
        for rec, lab in steer:
            where = f"{split} {lab}"
            dim, c, r, fact = lab["steer"], rec["chosen"], rec["rejected"], facts[lab["topic"]]
            assert lab["flaw"] is None and not any(i in rec["prompt"] for i in instructions), where
            # equal on everything but the one dimension, where the chosen response is higher
            assert [k for k in SCORE_RANGES if c[k] != r[k]] == [dim] and c[dim] > r[dim], where
            assert (c["helpfulness"], c["correctness"], c["coherence"], c["instruction_following"]) == (4, 4, 4, 5)
            for side in (c, r):  # both correct
                assert _mentions(side["response"], fact.answer), (where, side["response"])
                assert not _mentions(side["response"], fact.wrong), (where, side["response"])
            if dim == "verbosity":
                assert _sentences(c["response"]) == c["verbosity"] > _sentences(r["response"]) == 1, where
                assert c["response"].startswith(r["response"]), where
            else:
                assert _sentences(c["response"]) == _sentences(r["response"]) == 1, where
                assert c["complexity"] >= 3, where


def test_readme_counts_match_the_build():
    readme = (SAMPLE_DIR / "README.md").read_text(encoding="utf-8")
    for split, row in sample_build.summary().items():
        cells = [split, row["pairs"], row["topics"], *(row[f] for f in FLAWS), row["chosen_imperfect"],
                 *(row[f"steer:{d}"] for d in STEER)]
        line = "| " + " | ".join(str(c) for c in cells) + " |"
        assert line in readme, f"README.md count row out of date, expected: {line}"
