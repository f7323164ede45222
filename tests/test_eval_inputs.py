"""Instruction sets, their even selection, baseline outputs files, and the shipped lm-eval data."""

from __future__ import annotations

import json

import pytest

from amopo.errors import DataError
from amopo.evaluate.generate import load_instructions, read_outputs, select_evenly, write_outputs
from amopo.evaluate.lm_eval_tasks import SHIPPED_TASKS_DIR


def test_shipped_instruction_set():
    items = load_instructions("shipped")
    assert len(items) == 100
    assert len({i["id"] for i in items}) == 100 and len({i["instruction"] for i in items}) == 100
    categories = [json.loads(line)["category"] for line in
                  (SHIPPED_TASKS_DIR.parent / "instructions.jsonl").read_text().splitlines()]
    chosen = {categories[items.index(i)] for i in select_evenly(items, 16)}
    assert len(chosen) >= 8            # a small budget still spans most kinds of instruction


def test_select_evenly():
    assert select_evenly(list(range(10)), 3) == [0, 3, 6]
    assert select_evenly(list(range(4)), 0) == [0, 1, 2, 3] and select_evenly([1, 2], 5) == [1, 2]


def test_instruction_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "ins.jsonl"
    bad.write_text('{"instruction": "ok"}\n{"prompt": "no instruction here"}\n')
    with pytest.raises(DataError, match=r"ins.jsonl:2 field 'instruction': missing or empty"):
        load_instructions(str(bad))
    bad.write_text('{"instruction": "ok"}\nnot json\n')
    with pytest.raises(DataError, match=r"ins.jsonl:2: not valid JSON"):
        load_instructions(str(bad))
    good = tmp_path / "ins.json"
    good.write_text(json.dumps([{"instruction": "a", "difficulty": 0.3}, {"instruction": "b", "id": "x"}]))
    assert load_instructions(str(good)) == [{"id": "1", "instruction": "a", "difficulty": 0.3},
                                            {"id": "x", "instruction": "b"}]


def test_outputs_file_round_trip_and_missing_instruction(tmp_path):
    path = tmp_path / "baseline.jsonl"
    write_outputs(path, ["b?", "a?"], ["B", "A"], "gen-1")
    outputs, info = read_outputs(path, ["a?", "b?"])          # matched by text, not by order
    assert outputs == ["A", "B"] and info == {"kind": "outputs", "file": str(path), "generator": "gen-1"}
    with pytest.raises(DataError, match=r"baseline.jsonl: no output for 1 of the 2 instructions \(first: 'c\?'\)"):
        read_outputs(path, ["a?", "c?"])


def test_shipped_task_data_is_well_formed():
    arithmetic = [json.loads(line) for line in (SHIPPED_TASKS_DIR / "arithmetic.jsonl").read_text().splitlines()]
    facts = [json.loads(line) for line in (SHIPPED_TASKS_DIR / "facts_mc.jsonl").read_text().splitlines()]
    assert len(arithmetic) == 40 and all(a["answer"].lstrip("-").isdigit() for a in arithmetic)
    assert all(a["answer"] == a["answer"].strip() for a in arithmetic)     # no leading space (exact match)
    assert len(facts) == 40 and all(len(f["choices"]) == 4 and 0 <= f["answer"] < 4 for f in facts)
    assert len({f["question"] for f in facts}) == 40
