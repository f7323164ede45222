"""Dimension prompts, chat rendering, tokenisation layout, truncation and the token cache."""

from __future__ import annotations

import json
import math
import os

import pytest

from amopo.data import prompts, tokenize
from amopo.data.dimensions import KNOWN, Dimension
from amopo.data.prepare import PrepareConfig, prepare
from amopo.data.records import PreferencePair, Response
from amopo.data.tokenize import TruncationReport, load_tokenized, tokenize_pair
from amopo.errors import DataError

DIMS = [KNOWN[n] for n in ("overall", "helpfulness", "correctness", "instruction_following")]


def make_pair(prompt="What is two plus two?", chosen="Two plus two is four.", rejected="It is five.") -> PreferencePair:
    return PreferencePair(prompt,
                          Response(chosen, {"helpfulness": 4, "correctness": 3, "instruction_following": 5}, 2.5),
                          Response(rejected, {"helpfulness": 1, "correctness": 0, "instruction_following": 2}),
                          source="mem:1")


# --------------------------------------------------------------------------------------------- prompts


def test_one_prefix_per_dimension_showing_the_chosen_score():
    pair = make_pair()
    scores = prompts.shown_scores(pair, DIMS)
    assert scores == [None, 4.0, 3.0, 5.0]
    prefixes = prompts.dimension_prefixes(DIMS, scores)
    assert len(prefixes) == 4
    assert "overall" in prefixes[0] and not any(ch.isdigit() for ch in prefixes[0])
    assert prefixes[1] == ("Respond at helpfulness level 4 on a scale of 0 to 4 "
                           "(how well the response meets the user's need).")
    assert "correctness level 3 on a scale of 0 to 4" in prefixes[2]
    assert "instruction following level 5 on a scale of 1 to 5" in prefixes[3]
    for i, p in enumerate(prefixes):  # one dimension each
        assert sum(d.name.replace("_", " ") in p for d in DIMS) == 1, i
    assert prompts.shown_scores(pair, DIMS, "scale-max") == [None, 4.0, 4.0, 5.0]


def test_prefixes_are_short(tiny_tokenizer):
    for p in prompts.dimension_prefixes(DIMS, [None, 4.0, 3.0, 5.0]):
        assert len(p.split()) <= 30


def test_accumulate_flag_reproduces_the_released_preprocessing():
    own = prompts.dimension_prefixes(DIMS, [None, 4.0, 3.0, 5.0])
    acc = prompts.dimension_prefixes(DIMS, [None, 4.0, 3.0, 5.0], accumulate=True)
    assert acc[0] == own[0]
    assert acc[3] == "\n".join(own)
    assert all(acc[k].endswith(own[k]) and acc[k].startswith(own[0]) for k in range(4))


def test_unknown_dimension_prefix_uses_its_inferred_scale():
    humour = Dimension("humour", 1, 9, "humour", inferred=True)
    assert "humour level 7 on a scale of 1 to 9" in prompts.dimension_prefix(humour, 7.0)
    with pytest.raises(ValueError):
        prompts.dimension_prefix(humour, math.nan)


def test_chat_template_applied_with_prefix_before_user_text(tiny_tokenizer):
    text = prompts.render_prompt(tiny_tokenizer, prompts.conditioned_text("PREFIX.", "Hello?"))
    assert text == "<|im_start|>user\nPREFIX.\n\nHello?<|im_end|>\n<|im_start|>assistant\n"
    assert prompts.render_response(tiny_tokenizer, "Hello?", "Hi.") == "Hi.<|im_end|>"


def test_fallback_without_chat_template(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tok.chat_template = None
    assert prompts.render_prompt(tok, "Hello?") == "User: Hello?\nAssistant: "
    assert prompts.render_response(tok, "Hello?", "Hi.") == "Hi." + tok.eos_token
    row = tokenize_pair(make_pair(), 0, tok, DIMS)
    assert row["chosen_ids"][-1] == tok.eos_token_id


# --------------------------------------------------------------------------------------------- rows


def test_row_layout_and_label_masking(tiny_tokenizer):
    tok = tiny_tokenizer
    pair = make_pair()
    row = tokenize_pair(pair, 7, tok, DIMS)
    assert set(row) == {"id", "prompt_ids", "plain_prompt_ids", "chosen_ids", "rejected_ids", "chosen_scores",
                        "rejected_scores", "chosen_reward", "rejected_reward"}
    assert row["id"] == 7 and len(row["prompt_ids"]) == 4
    assert row["chosen_scores"][1:] == [4.0, 3.0, 5.0] and math.isnan(row["chosen_scores"][0])
    assert row["rejected_scores"][1:] == [1.0, 0.0, 2.0]
    assert row["chosen_reward"] == 2.5 and math.isnan(row["rejected_reward"])
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    assert row["chosen_ids"][-1] == eot and row["rejected_ids"][-1] == eot
    # prompt + response re-renders the whole conversation; labels cover exactly the response
    prefixes = prompts.dimension_prefixes(DIMS, prompts.shown_scores(pair, DIMS))
    for k, prompt_ids in enumerate(row["prompt_ids"]):
        user = prompts.conditioned_text(prefixes[k], pair.prompt)
        full = tok.apply_chat_template([{"role": "user", "content": user},
                                        {"role": "assistant", "content": pair.chosen.text}], tokenize=False)
        seq = prompt_ids + row["chosen_ids"]
        labels = [-100] * len(prompt_ids) + row["chosen_ids"]
        assert tok.decode(seq) == full.rstrip()
        assert tok.decode([t for t in labels if t != -100]) == pair.chosen.text + "<|im_end|>"
        assert tok.decode(prompt_ids).endswith("<|im_start|>assistant\n")
    assert tok.decode(row["plain_prompt_ids"]) == prompts.render_prompt(tok, pair.prompt)


def test_responses_are_shared_by_all_dimensions(tiny_tokenizer):
    row = tokenize_pair(make_pair(), 0, tiny_tokenizer, DIMS)
    lengths = {len(p) for p in row["prompt_ids"]}
    assert len(lengths) > 1  # prompts differ by dimension, the single response list serves them all
    assert isinstance(row["chosen_ids"][0], int)


def _long_user(n_words: int) -> str:
    return " ".join(f"word{i % 50} the cat" for i in range(n_words))


def test_user_text_cut_keeps_prefix_and_whole_response(tiny_tokenizer):
    tok = tiny_tokenizer
    pair = make_pair(prompt="START " + _long_user(200) + " END")
    full = tokenize_pair(pair, 0, tok, DIMS, max_length=100_000)
    report = TruncationReport()
    row = tokenize_pair(pair, 0, tok, DIMS, max_length=400, min_user_tokens=8, report=report)
    assert report.to_json() == {"examples": 1, "kept": 1, "truncated_prompts": 1, "truncated_responses": 0,
                                "dropped": 0}
    assert row["chosen_ids"] == full["chosen_ids"] and row["rejected_ids"] == full["rejected_ids"]
    assert max(len(p) for p in row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"])) <= 400
    prefixes = prompts.dimension_prefixes(DIMS, prompts.shown_scores(pair, DIMS))
    for prefix, ids in zip(prefixes, row["prompt_ids"]):
        text = tok.decode(ids)
        assert text.startswith("<|im_start|>user\n" + prefix + "\n\nSTART")  # prefix and text start survive
        assert "END" not in text and text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert "END" not in tok.decode(row["plain_prompt_ids"])


def test_response_tail_cut_when_user_text_is_at_its_minimum(tiny_tokenizer):
    tok = tiny_tokenizer
    pair = make_pair(prompt="Short question?", chosen=_long_user(300))
    report = TruncationReport()
    row = tokenize_pair(pair, 0, tok, DIMS, max_length=200, report=report)
    assert report.truncated_responses == 1 and report.truncated_prompts == 0 and report.dropped == 0
    longest = max(len(p) for p in row["prompt_ids"])
    assert longest + len(row["chosen_ids"]) == 200
    assert tok.decode(row["rejected_ids"]) == "It is five.<|im_end|>"  # short response untouched
    assert "Short question?" in tok.decode(row["prompt_ids"][0])


def test_dropped_when_scaffolding_and_prefix_do_not_fit(tiny_tokenizer):
    report = TruncationReport()
    assert tokenize_pair(make_pair(), 0, tiny_tokenizer, DIMS, max_length=20, report=report) is None
    assert report.dropped == 1 and report.kept == 0


# --------------------------------------------------------------------------------------------- cache


def _records(n: int) -> list[dict]:
    return [{"prompt": f"Question {i}: what is {i} plus {i}?",
             "chosen": {"response": f"It is {2 * i}.", "helpfulness": 4, "correctness": 4, "instruction_following": 5},
             "rejected": {"response": "No idea.", "helpfulness": 1, "correctness": 0, "instruction_following": 2}}
            for i in range(n)]


def _comparable(rows) -> str:
    return json.dumps([rows[i] for i in range(len(rows))])  # NaN → "NaN", so equal rows compare equal


@pytest.fixture
def prepared_dir(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in _records(12)))
    prepare(PrepareConfig(data_source=str(src), output=str(tmp_path / "prepared"), eval_fraction=0.25), echo=None)
    return tmp_path / "prepared"


def test_cache_hit_on_rerun_without_tokenising(prepared_dir, tiny_tokenizer, monkeypatch):
    first = load_tokenized(prepared_dir, tiny_tokenizer, "train", max_length=256, show_progress=False)
    assert not first.from_cache and first.dimensions == ["overall", "helpfulness", "correctness",
                                                          "instruction_following"]
    assert first.report["kept"] == len(first.rows) > 0

    def boom(*a, **k):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(tokenize, "tokenize_pair", boom)
    monkeypatch.setattr(tokenize, "tokenize_pairs", boom)
    monkeypatch.setattr(tokenize, "_encode", boom)
    second = load_tokenized(prepared_dir, tiny_tokenizer, "train", max_length=256, show_progress=False)
    assert second.from_cache and second.cache_dir == first.cache_dir
    assert _comparable(second.rows) == _comparable(first.rows)
    assert second.report == first.report
    meta = json.loads((first.cache_dir / "meta.json").read_text())
    assert meta["inputs"]["settings"]["max_length"] == 256 and meta["report"] == first.report
    assert first.cache_dir.parent == prepared_dir / "tokenized"
    assert not [p for p in first.cache_dir.parent.iterdir() if p.name.startswith(".tmp")]


def test_cache_miss_when_a_setting_the_tokenizer_or_the_data_changes(prepared_dir, tiny_model_dir, tiny_tokenizer):
    from transformers import AutoTokenizer

    def load(tok=tiny_tokenizer, **kw):
        return load_tokenized(prepared_dir, tok, "train", show_progress=False, **{"max_length": 256, **kw})

    base = load()
    assert load().from_cache
    for kw in ({"max_length": 255}, {"accumulate_prefixes": True}, {"min_user_tokens": 4},
               {"score_source": "scale-max"}):
        other = load(**kw)
        assert not other.from_cache and other.cache_dir != base.cache_dir, kw
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tok.chat_template = tok.chat_template.replace("\n", "\n\n")
    assert not load(tok).from_cache
    train = prepared_dir / "train.jsonl"
    train.write_text(train.read_text().replace("No idea.", "No idea at all."))
    changed = load()
    assert not changed.from_cache and changed.cache_dir != base.cache_dir


def test_accumulated_rows_differ_only_in_prompts(prepared_dir, tiny_tokenizer):
    plain = load_tokenized(prepared_dir, tiny_tokenizer, "train", max_length=512, show_progress=False).rows[0]
    acc = load_tokenized(prepared_dir, tiny_tokenizer, "train", max_length=512, accumulate_prefixes=True,
                         show_progress=False).rows[0]
    assert acc["chosen_ids"] == plain["chosen_ids"] and acc["prompt_ids"][0] == plain["prompt_ids"][0]
    assert len(acc["prompt_ids"][3]) > len(plain["prompt_ids"][3])


def test_concurrent_writer_keeps_the_first_cache(prepared_dir, tiny_tokenizer):
    first = load_tokenized(prepared_dir, tiny_tokenizer, "eval", max_length=256, show_progress=False)
    before = (first.cache_dir / "rows.arrow").stat().st_mtime_ns
    # a second process that tokenised at the same time finds the folder taken and keeps it
    again = tokenize._write_cache(first.cache_dir.parent, first.cache_dir.name, [], {"report": {}})
    assert again == first.cache_dir and (first.cache_dir / "rows.arrow").stat().st_mtime_ns == before
    assert sorted(os.listdir(first.cache_dir.parent)) == [first.cache_dir.name]


def test_nothing_fits_is_an_error(prepared_dir, tiny_tokenizer):
    with pytest.raises(DataError, match="no pair fits max_length=16") as info:
        load_tokenized(prepared_dir, tiny_tokenizer, "train", max_length=16, show_progress=False)
    assert info.value.file.endswith("train.jsonl")
    assert not (prepared_dir / "tokenized").exists() or not any((prepared_dir / "tokenized").iterdir())


def test_empty_eval_split_gives_no_rows(tmp_path, tiny_tokenizer):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in _records(3)))
    prepare(PrepareConfig(data_source=str(src), output=str(tmp_path / "p"), eval_fraction=0.0), echo=None)
    result = load_tokenized(tmp_path / "p", tiny_tokenizer, "eval", max_length=256, show_progress=False)
    assert len(result.rows) == 0 and result.report["examples"] == 0


def test_rows_behave_like_a_list_of_dicts(prepared_dir, tiny_tokenizer):
    rows = load_tokenized(prepared_dir, tiny_tokenizer, "train", max_length=256, show_progress=False).rows
    n = len(rows)
    assert n > 3 and rows[-1]["id"] == rows[n - 1]["id"]
    assert [r["id"] for r in rows[1:3]] == [rows[1]["id"], rows[2]["id"]]
    assert [r["id"] for r in rows[::2]] == [rows[i]["id"] for i in range(0, n, 2)]
    assert [r["id"] for r in rows] == [r["id"] for r in list(rows)]
    assert isinstance(rows[1:3][0]["prompt_ids"][0], list)
    with pytest.raises(IndexError):
        rows[n]
