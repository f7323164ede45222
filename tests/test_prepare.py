"""The prepare step: outputs, manifest, eval split, atomic replacement, bad input, formats, tokenising."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest

from amopo.config import add_arguments, resolve
from amopo.data.prepare import PrepareConfig, in_eval_split, prepare
from amopo.data.tokenize import load_tokenized
from amopo.errors import ConfigError, DataError
from test_readers import BAD_LINES, GOOD, write_lines


def records(n: int, *, dup_every: int = 0) -> list[dict]:
    out = []
    for i in range(n):
        q = i // 2 if dup_every and i % dup_every else i  # some prompts repeat with other responses
        out.append({"prompt": f"Question {q}: what is {q} times three?",
                    "chosen": {"response": f"It is {3 * q}. ({i})", "helpfulness": 4, "correctness": 4,
                               "instruction_following": 5},
                    "rejected": {"response": f"Maybe {q}. ({i})", "helpfulness": 1, "correctness": 1,
                                 "instruction_following": 2}})
    return out


def write_records(path: Path, recs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir())


def test_writes_records_and_manifest(tmp_path, capsys):
    src = write_records(tmp_path / "in.jsonl", records(40))
    out = tmp_path / "out"
    manifest = prepare(PrepareConfig(data_source=str(src), output=str(out)))
    assert sorted(p.name for p in out.iterdir()) == ["eval.jsonl", "prepare.json", "train.jsonl"]
    assert json.loads((out / "prepare.json").read_text()) == manifest
    n_train = len((out / "train.jsonl").read_text().splitlines())
    n_eval = len((out / "eval.jsonl").read_text().splitlines())
    assert manifest["counts"] == {"train": n_train, "eval": n_eval, "skipped": 0} and n_train + n_eval == 40
    assert 0 < n_eval < 12
    assert manifest["source"] == {"data_source": str(src), "train": str(src), "eval": None, "data_format": "amopo"}
    assert [(d["name"], d["low"], d["high"]) for d in manifest["dimensions"]] == [
        ("overall", None, None), ("helpfulness", 0, 4), ("correctness", 0, 4), ("instruction_following", 1, 5)]
    assert manifest["config"]["eval_fraction"] == 0.1 and manifest["tokenized"] is None
    first = json.loads((out / "train.jsonl").read_text().splitlines()[0])
    assert set(first) == {"prompt", "chosen", "rejected"} and first["chosen"]["helpfulness"] == 4
    printed = capsys.readouterr().out
    assert f"prepared {n_train} train / {n_eval} eval pairs" in printed and "helpfulness 0-4" in printed
    assert siblings(out) == ["in.jsonl", "out"]


def test_eval_split_is_deterministic_and_keeps_equal_prompts_together(tmp_path):
    src = write_records(tmp_path / "in.jsonl", records(60, dup_every=3))
    cfg = dict(data_source=str(src), eval_fraction=0.3, seed=1)
    prepare(PrepareConfig(output=str(tmp_path / "a"), **cfg), echo=None)
    prepare(PrepareConfig(output=str(tmp_path / "b"), **cfg), echo=None)
    for name in ("train.jsonl", "eval.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    train = {json.loads(x)["prompt"] for x in (tmp_path / "a" / "train.jsonl").read_text().splitlines()}
    held = {json.loads(x)["prompt"] for x in (tmp_path / "a" / "eval.jsonl").read_text().splitlines()}
    assert train and held and not train & held
    prepare(PrepareConfig(output=str(tmp_path / "c"), **{**cfg, "seed": 2}), echo=None)
    assert (tmp_path / "c" / "eval.jsonl").read_text() != (tmp_path / "a" / "eval.jsonl").read_text()
    assert in_eval_split("x", 0.5, 0) == in_eval_split("x", 0.5, 0)
    assert not in_eval_split("x", 0.0, 0)


def test_eval_input_and_max_records(tmp_path):
    src = write_records(tmp_path / "in.jsonl", records(10))
    held = write_records(tmp_path / "held.jsonl", records(5))
    manifest = prepare(PrepareConfig(data_source=str(src), eval_source=str(held), output=str(tmp_path / "o"),
                                     max_records=4), echo=None)
    assert manifest["counts"]["train"] == 4 and manifest["counts"]["eval"] == 4
    assert manifest["source"]["eval"] == str(held)


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_input_writes_nothing(tmp_path, case):
    src = write_lines(tmp_path / "in.jsonl", [GOOD, "", BAD_LINES[case][0]])
    out = tmp_path / "out"
    with pytest.raises(DataError) as info:
        prepare(PrepareConfig(data_source=str(src), output=str(out)), echo=None)
    assert f"{src}:3" in str(info.value)
    fieldname = BAD_LINES[case][1]
    if fieldname:
        assert f"field '{fieldname}'" in str(info.value)
    assert not out.exists() and siblings(out) == ["in.jsonl"]


def test_bad_input_leaves_previous_output_untouched(tmp_path):
    out = tmp_path / "out"
    good = write_records(tmp_path / "good.jsonl", records(10))
    prepare(PrepareConfig(data_source=str(good), output=str(out)), echo=None)
    before = snapshot(out)
    bad = write_lines(tmp_path / "bad.jsonl", [GOOD, BAD_LINES["score out of range"][0]])
    with pytest.raises(DataError, match="bad.jsonl:2 field 'chosen.helpfulness'"):
        prepare(PrepareConfig(data_source=str(bad), output=str(out)), echo=None)
    assert snapshot(out) == before
    assert siblings(out) == ["bad.jsonl", "good.jsonl", "out"]


def test_replaces_a_previous_output_and_refuses_other_folders(tmp_path):
    out = tmp_path / "out"
    prepare(PrepareConfig(data_source=str(write_records(tmp_path / "a.jsonl", records(10))), output=str(out)), echo=None)
    prepare(PrepareConfig(data_source=str(write_records(tmp_path / "b.jsonl", records(6))), output=str(out)), echo=None)
    manifest = json.loads((out / "prepare.json").read_text())
    assert manifest["source"]["data_source"].endswith("b.jsonl")
    assert manifest["counts"]["train"] + manifest["counts"]["eval"] == 6
    assert siblings(out) == ["a.jsonl", "b.jsonl", "out"]

    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty and holds no previous prepare output"):
        prepare(PrepareConfig(data_source=str(tmp_path / "a.jsonl"), output=str(other)), echo=None)
    assert (other / "keep.txt").read_text() == "mine"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        prepare(PrepareConfig(data_source=str(tmp_path / "a.jsonl"), output=str(tmp_path / "afile")), echo=None)
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare(PrepareConfig(data_source=str(tmp_path / "a.jsonl"), output=str(empty)), echo=None)
    assert (empty / "prepare.json").is_file()


def test_requested_dimension_absent_from_the_data(tmp_path):
    src = write_records(tmp_path / "in.jsonl", records(5))
    out = tmp_path / "out"
    with pytest.raises(DataError) as info:
        prepare(PrepareConfig(data_source=str(src), output=str(out), dimensions=["overall", "honesty"]), echo=None)
    message = str(info.value)
    assert f"{src}:1 field 'chosen.honesty'" in message
    assert "dimensions in the data: correctness, helpfulness, instruction_following" in message
    assert not out.exists()


def test_unknown_dimension_in_the_data_gets_an_inferred_scale(tmp_path, caplog):
    recs = records(8)
    for i, r in enumerate(recs):
        r["chosen"]["humour"], r["rejected"]["humour"] = 6 + i % 3, 2
    src = write_records(tmp_path / "in.jsonl", recs)
    with caplog.at_level(logging.WARNING):
        manifest = prepare(PrepareConfig(data_source=str(src), output=str(tmp_path / "o"), eval_fraction=0.0,
                                         dimensions=["humour", "helpfulness"]), echo=None)
    assert manifest["dimensions"][0] == {"name": "humour", "low": 2.0, "high": 8.0, "description": "humour",
                                         "inferred": True}
    assert "humour" in caplog.text and "observed scale 2 to 8" in caplog.text


def test_missing_chosen_score_strict_and_skipped(tmp_path):
    recs = records(6)
    del recs[2]["chosen"]["correctness"]
    src = write_records(tmp_path / "in.jsonl", recs)
    with pytest.raises(DataError, match="in.jsonl:3 field 'chosen.correctness': no score for requested"):
        prepare(PrepareConfig(data_source=str(src), output=str(tmp_path / "o")), echo=None)
    manifest = prepare(PrepareConfig(data_source=str(src), output=str(tmp_path / "o"), skip_invalid=True,
                                     eval_fraction=0.0), echo=None)
    assert manifest["invalid"]["by_reason"] == {"missing_score": 1} and manifest["counts"]["train"] == 5


def test_skip_invalid_report_in_manifest_and_summary(tmp_path, capsys):
    lines = [GOOD, BAD_LINES["not json"][0], BAD_LINES["too long"][0], _other(GOOD), BAD_LINES["not json"][0]]
    src = write_lines(tmp_path / "in.jsonl", lines)
    manifest = prepare(PrepareConfig(data_source=str(src), output=str(tmp_path / "o"), skip_invalid=True, max_chars=1000,
                                     dimensions=["overall", "helpfulness"], eval_fraction=0.0))
    assert manifest["invalid"]["skipped"] == 3
    assert manifest["invalid"]["by_reason"] == {"not_json": 2, "too_long": 1}
    assert manifest["invalid"]["examples"][0].startswith(f"{src}:2")
    assert "skipped 3 invalid records: not_json=2, too_long=1" in capsys.readouterr().out


def _other(rec: dict) -> dict:
    return {**rec, "prompt": rec["prompt"] + " Another one."}


def test_helpsteer2_and_ultrafeedback_formats(data_dir, tmp_path, tiny_tokenizer):
    hs2 = str(data_dir / "helpsteer2_small.jsonl")
    with pytest.raises(DataError, match="'instruction_following' is requested .* dimensions in the data: "
                                        "coherence, complexity, correctness, helpfulness, verbosity"):
        prepare(PrepareConfig(data_source=hs2, data_format="helpsteer2", output=str(tmp_path / "h"),
                              dimensions=["overall", "helpfulness", "instruction_following"]), echo=None)
    defaults = prepare(PrepareConfig(data_source=hs2, data_format="helpsteer2", output=str(tmp_path / "h"), eval_fraction=0.0),
                       echo=None)   # raw HelpSteer2 has what its defaults ask for
    assert [d["name"] for d in defaults["dimensions"]] == ["overall", "helpfulness", "correctness", "coherence"]
    manifest = prepare(PrepareConfig(data_source=hs2, data_format="helpsteer2", output=str(tmp_path / "h"), eval_fraction=0.0,
                                     dimensions=["overall", "helpfulness", "verbosity"]), echo=None)
    assert manifest["counts"]["train"] == 2 and manifest["build"]["train"]["ties_dropped"] == 1

    uf = str(data_dir / "ultrafeedback_small.jsonl")
    defaults = prepare(PrepareConfig(data_source=uf, data_format="ultrafeedback", output=str(tmp_path / "u"), eval_fraction=0.0),
                       echo=None)
    assert [d["name"] for d in defaults["dimensions"]] == ["overall", "helpfulness", "truthfulness",
                                                           "instruction_following"]
    dims = ["overall", "helpfulness", "honesty"]
    with pytest.raises(DataError, match="ultrafeedback_small.jsonl:2 field 'chosen.honesty'"):  # N/A there
        prepare(PrepareConfig(data_source=uf, data_format="ultrafeedback", output=str(tmp_path / "u"), dimensions=dims),
                echo=None)
    manifest = prepare(PrepareConfig(data_source=uf, data_format="ultrafeedback", output=str(tmp_path / "u"), dimensions=dims,
                                     skip_invalid=True, eval_fraction=0.0), echo=None)
    assert manifest["counts"]["train"] == 1 and manifest["invalid"]["by_reason"] == {"missing_score": 1}
    assert manifest["dimensions"][1]["high"] == 5  # UltraFeedback helpfulness is 1–5
    rows = load_tokenized(tmp_path / "u", tiny_tokenizer, "train", max_length=512, show_progress=False).rows
    assert rows[0]["chosen_scores"][1:] == [4.0, 5.0]


def test_prepare_with_a_model_fills_the_cache(tmp_path, tiny_model_dir, tiny_tokenizer, capsys):
    src = write_records(tmp_path / "in.jsonl", records(12))
    out = tmp_path / "out"
    manifest = prepare(PrepareConfig(data_source=str(src), output=str(out), base_model=str(tiny_model_dir), max_length=96))
    tok = manifest["tokenized"]
    assert tok["base_model"] == str(tiny_model_dir) and set(tok["splits"]) == {"train", "eval"}
    assert tok["splits"]["train"]["kept"] == manifest["counts"]["train"]
    assert (out / "tokenized" / tok["splits"]["train"]["cache"] / "rows.arrow").is_file()
    assert "tokenised train for" in capsys.readouterr().out
    hit = load_tokenized(out, tiny_tokenizer, "train", max_length=96, show_progress=False)
    assert hit.from_cache and hit.cache_dir.name == tok["splits"]["train"]["cache"]


def test_sample_input(tmp_path):
    sample_data = pytest.importorskip("amopo.sample_data", reason="the shipped sample data is not there yet")
    if not Path(sample_data.sample_path("train")).is_file():
        pytest.skip("the shipped sample data is not there yet")
    manifest = prepare(PrepareConfig(output=str(tmp_path / "o")), echo=None)
    assert manifest["source"]["eval"] == str(sample_data.sample_path("test"))
    assert manifest["counts"]["train"] > 0 and manifest["counts"]["eval"] > 0


def test_config_from_yaml_flags_and_validation(tmp_path):
    yaml_file = tmp_path / "prepare.yaml"
    yaml_file.write_text("data_source: data.jsonl\ndimensions: [overall, helpfulness]\nmax_length: 512\n")
    parser = argparse.ArgumentParser()
    add_arguments(parser, PrepareConfig)
    flags = vars(parser.parse_args(["--max-length", "256", "--skip-invalid", "--tie-rule", "drop"]))
    cfg = resolve(PrepareConfig, yaml_file, flags)
    assert (cfg.data_source, cfg.dimensions, cfg.max_length, cfg.skip_invalid, cfg.tie_rule) == (
        "data.jsonl", ["overall", "helpfulness"], 256, True, "drop")
    assert "Output folder" in parser.format_help()
    for bad in ({"data_format": "csv"}, {"uf_rejected": "best"}, {"score_source": "rejected"}, {"eval_fraction": 1.0},
                {"dimensions": []}, {"max_records": 0}, {"data_source": "sample", "data_format": "helpsteer2"}):
        with pytest.raises(ConfigError):
            resolve(PrepareConfig, None, bad)
    with pytest.raises(ConfigError, match="hub datasets are read for the helpsteer2 and ultrafeedback formats"):
        prepare(PrepareConfig(data_source="someone/prefs", output=str(tmp_path / "o")), echo=None)
    src = write_records(tmp_path / "in.jsonl", records(4))
    with pytest.raises(ConfigError, match="requested twice: helpfulness"):
        prepare(PrepareConfig(data_source=str(src), output=str(tmp_path / "o"),
                              dimensions=["helpfulness", "overall", "helpfulness"]), echo=None)


def test_model_budget_too_small_writes_nothing(tmp_path, tiny_model_dir):
    src = write_records(tmp_path / "in.jsonl", records(6))
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"in.jsonl field 'max_length': no train pair fits max_length=20"):
        prepare(PrepareConfig(data_source=str(src), output=str(out), base_model=str(tiny_model_dir), max_length=20), echo=None)
    assert siblings(out) == ["in.jsonl"]
