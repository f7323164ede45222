"""Readers: the AMoPO record format with its validation, and the raw-source row readers."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest

from amopo.data.helpsteer2 import read_helpsteer2
from amopo.data.readers import is_hub_name, open_rows, read_amopo
from amopo.data.ultrafeedback import read_ultrafeedback
from amopo.errors import DataError

GOOD = {"prompt": "Name a colour.", "chosen": {"response": "Blue.", "helpfulness": 4, "correctness": 4},
        "rejected": {"response": "Seven.", "helpfulness": 0, "correctness": 1}}


def _with(**changes) -> dict:
    rec = json.loads(json.dumps(GOOD))
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        target = rec
        for p in parents:
            target = target[p]
        if value is _DELETE:
            del target[leaf]
        else:
            target[leaf] = value
    return rec


_DELETE = object()

# (bad line as text or bytes, field named in the error, reason counted under skip_invalid)
BAD_LINES = {
    "not json": ('{"prompt": "x", "chosen": ', None, "not_json"),
    "not an object": ("[1, 2, 3]", None, "not_object"),
    "missing prompt": (_with(prompt=_DELETE), "prompt", "missing_field"),
    "missing chosen": (_with(chosen=_DELETE), "chosen", "missing_field"),
    "missing rejected": (_with(rejected=_DELETE), "rejected", "missing_field"),
    "chosen not an object": (_with(chosen="Blue."), "chosen", "bad_type"),
    "rejected without response": (_with(rejected__response=_DELETE), "rejected.response", "missing_field"),
    "prompt not a string": (_with(prompt=42), "prompt", "bad_type"),
    "response not a string": (_with(chosen__response=["Blue."]), "chosen.response", "bad_type"),
    "score not numeric": (_with(chosen__helpfulness="high"), "chosen.helpfulness", "bad_score"),
    "score is a bool": (_with(rejected__correctness=True), "rejected.correctness", "bad_score"),
    "score is NaN": ('{"prompt": "p", "chosen": {"response": "a", "helpfulness": NaN}, '
                     '"rejected": {"response": "b", "helpfulness": 1}}', "chosen.helpfulness", "bad_score"),
    "reward not numeric": (_with(chosen__reward_score="big"), "chosen.reward_score", "bad_score"),
    "score out of range": (_with(chosen__helpfulness=7), "chosen.helpfulness", "score_out_of_range"),
    "score below range": (_with(rejected__correctness=-1), "rejected.correctness", "score_out_of_range"),
    "empty response": (_with(rejected__response="  \n\t "), "rejected.response", "empty_text"),
    "empty prompt": (_with(prompt=" "), "prompt", "empty_text"),
    "identical responses": (_with(rejected__response=" Blue. "), "rejected.response", "identical_responses"),
    "not utf-8": (b'{"prompt": "caf\xe9", "chosen": {"response": "a"}, "rejected": {"response": "b"}}',
                  None, "not_utf8"),
    "too long": (_with(chosen__response="word " * 30_000), "chosen.response", "too_long"),
}


def write_lines(path: Path, lines: list) -> Path:
    """Write records (dicts), raw text or raw bytes, one per line."""
    with open(path, "wb") as fh:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line)
            fh.write((line.encode("utf-8") if isinstance(line, str) else line) + b"\n")
    return path


def bad_file(tmp_path: Path, case: str) -> Path:
    """A file whose line 3 is the bad case (line 2 is blank, which is ignored)."""
    return write_lines(tmp_path / f"{case.replace(' ', '_')}.jsonl", [GOOD, "", BAD_LINES[case][0], GOOD])


def test_reads_the_amopo_format(data_dir):
    result = read_amopo(data_dir / "amopo_small.jsonl")
    assert len(result.pairs) == 4 and result.skipped.total == 0
    first = result.pairs[0]
    assert first.prompt == "How do I boil an egg?"
    assert first.chosen.scores == {"helpfulness": 4.0, "correctness": 4.0, "instruction_following": 5.0}
    assert first.chosen.reward_score == 3.5 and first.rejected.reward_score == -1.0
    assert first.source == f"{data_dir / 'amopo_small.jsonl'}:1"
    assert result.pairs[2].source.endswith(":4")  # the blank line 3 is skipped but counted
    assert math.isnan(result.pairs[1].score("chosen", "overall"))
    assert first.to_json()["chosen"]["reward_score"] == 3.5


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_line_names_file_line_and_field(tmp_path, case):
    path = bad_file(tmp_path, case)
    _, fieldname, reason = BAD_LINES[case]
    with pytest.raises(DataError) as info:
        read_amopo(path, max_chars=100_000)
    message = str(info.value)
    assert f"{path}:3" in message
    assert info.value.line == 3 and info.value.reason == reason
    if fieldname:
        assert f"field '{fieldname}'" in message and info.value.field == fieldname


def test_skip_invalid_counts_by_reason(tmp_path):
    cases = ["not json", "not json", "score out of range", "identical responses", "not utf-8", "empty response"]
    path = write_lines(tmp_path / "mixed.jsonl", [GOOD] + [BAD_LINES[c][0] for c in cases] + [GOOD, ""])
    result = read_amopo(path, skip_invalid=True)
    assert len(result.pairs) == 2
    assert result.skipped.counts == {"not_json": 2, "score_out_of_range": 1, "identical_responses": 1,
                                     "not_utf8": 1, "empty_text": 1}
    report = result.skipped.to_json()
    assert report["skipped"] == 6
    assert report["examples"][0].startswith(f"{path}:2")
    assert len(report["examples"]) <= 5


def test_no_valid_record_is_always_an_error(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", ["nope", "", "[]"])
    with pytest.raises(DataError, match="no valid preference pair .*not_json=1, not_object=1"):
        read_amopo(path, skip_invalid=True)
    empty = write_lines(tmp_path / "empty.jsonl", ["", "  "])
    with pytest.raises(DataError, match="no valid preference pair"):
        read_amopo(empty)


def test_max_chars_and_max_records(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [GOOD, _with(prompt="Name a different colour."), GOOD])
    assert len(read_amopo(path, max_records=2).pairs) == 2
    with pytest.raises(DataError, match="longer than max_chars=10") as info:
        read_amopo(path, max_chars=10)
    assert info.value.field == "prompt" and info.value.line == 1


def test_unknown_dimension_scores_are_read(tmp_path):
    rec = _with(chosen__humour=9, rejected__humour=2)
    pair = read_amopo(write_lines(tmp_path / "a.jsonl", [rec])).pairs[0]
    assert pair.chosen.scores["humour"] == 9.0


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_amopo(tmp_path / "absent.jsonl")


def test_hub_names_are_told_apart_from_files(tmp_path):
    assert is_hub_name("nvidia/HelpSteer2") and is_hub_name("openbmb/UltraFeedback:train")
    assert not is_hub_name("data/train.jsonl") and not is_hub_name("a/b/c") and not is_hub_name("plain")
    with pytest.raises(DataError, match="no such file"):
        open_rows(str(tmp_path / "missing.parquet"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported file type"):
        open_rows(str(tmp_path / "x.csv"))


def _to_parquet(src: Path, dst: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    pq.write_table(pa.Table.from_pylist(rows), dst)
    return dst


def test_helpsteer2_jsonl_parquet_and_gzip_agree(data_dir, tmp_path):
    src = data_dir / "helpsteer2_small.jsonl"
    gz = tmp_path / "hs2.jsonl.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    results = [read_helpsteer2(str(p)) for p in (src, _to_parquet(src, tmp_path / "hs2.parquet"), gz)]
    as_json = [[p.to_json() for p in r.pairs] for r in results]
    assert as_json[0] == as_json[1] == as_json[2]
    assert len(as_json[0]) == 2
    assert results[1].pairs[0].source == f"{tmp_path / 'hs2.parquet'}:1"
    assert results[0].stats == {"rows": 7, "pairs": 2, "ties_dropped": 1, "unpaired_rows": 1}
    assert set(results[0].pairs[0].chosen.scores) == {"helpfulness", "correctness", "coherence", "complexity",
                                                      "verbosity"}


def test_ultrafeedback_jsonl_and_parquet(data_dir, tmp_path):
    src = data_dir / "ultrafeedback_small.jsonl"
    for path in (src, _to_parquet(src, tmp_path / "uf.parquet")):
        result = read_ultrafeedback(str(path))
        assert [(p.chosen.text, p.rejected.text) for p in result.pairs] == [
            ("Apple and banana.", "Carrot."), ("No, the moon is rock.", "Yes, cheddar.")]
        assert result.stats == {"rows": 3, "pairs": 2, "ties_dropped": 1}


def test_hub_names_go_through_datasets_load_dataset(data_dir, monkeypatch):
    import datasets

    rows = [json.loads(x) for x in (data_dir / "helpsteer2_small.jsonl").read_text().splitlines()]
    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return rows

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    result = read_helpsteer2("nvidia/HelpSteer2:validation")
    assert calls == [("nvidia/HelpSteer2", "validation")]
    assert len(result.pairs) == 2 and result.pairs[0].source == "hub:nvidia/HelpSteer2[validation]:1"
    calls.clear()
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: calls.append((name, split)) or
                        [json.loads(x) for x in (data_dir / "ultrafeedback_small.jsonl").read_text().splitlines()])
    assert len(read_ultrafeedback("openbmb/UltraFeedback").pairs) == 2
    assert calls == [("openbmb/UltraFeedback", "train")]
