"""`amopo annotate`: a judge adds instruction_following to raw HelpSteer2 rows and AMoPO records,
after which `prepare` with the default dimensions runs offline.

Judges here are real: the tiny local model (scoring by level-token probabilities; a subclass counts
what it is asked), and an endpoint judge over HTTP against a small OpenAI-compatible server in a
thread (stdlib ``http.server``) that answers "4", answers garbage for responses containing GARBLE,
and can fail its next requests with 503.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from amopo.annotate import AnnotateConfig, annotate, load_rubric_prompt
from amopo.cli import main
from amopo.data.dimensions import KNOWN
from amopo.data.helpsteer2 import read_helpsteer2
from amopo.data.prepare import PrepareConfig, prepare
from amopo.errors import DataError
from amopo.evaluate.judges import LocalJudge
from tests.helpers.records import write_jsonl

DIM = "instruction_following"


def hs2_rows() -> list[dict]:
    """3 prompts x 2 responses, raw HelpSteer2 columns, no helpfulness ties."""
    rows = []
    for i, (prompt, good, bad) in enumerate([
            ("List three colours, one per line.", "Red\nGreen\nBlue", "Colours are nice."),
            ("Answer in one word: capital of France?", "Paris", "The capital of France is a long story."),
            ("Write a haiku about rain.", "Soft rain on the roof\nwhispers to the sleeping town\npuddles hold the sky",
             "Rain is water that falls.")]):
        rows.append({"prompt": prompt, "response": good, "helpfulness": 4, "correctness": 4, "coherence": 4,
                     "complexity": 1, "verbosity": 1 + i % 2})
        rows.append({"prompt": prompt, "response": bad, "helpfulness": 1, "correctness": 2, "coherence": 3,
                     "complexity": 1, "verbosity": 1})
    return rows


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class CountingJudge(LocalJudge):
    """The tiny local judge, counting the verdicts it is asked for; ``stop_after`` interrupts the
    run (as Ctrl-C would) when asked for more after that many."""

    def __init__(self, *args, stop_after: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.asked, self.stop_after = 0, stop_after

    def rate(self, items, desc="rating answers"):
        if self.stop_after is not None and self.asked >= self.stop_after:
            raise KeyboardInterrupt
        self.asked += len(items)
        return super().rate(items, desc)


def counting_judge(model_dir, top_k: int = 512, **kwargs) -> CountingJudge:
    return CountingJudge(str(model_dir), load_rubric_prompt("v1", KNOWN[DIM]), top_k=top_k, progress=False, **kwargs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def judge_server():
    """An OpenAI-compatible chat server: "4", or "I like turtles." for a prompt holding GARBLE."""
    state = {"requests": 0, "fail_next": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _refused(self) -> bool:
            with lock:
                state["requests"] += 1
                if state["fail_next"] > 0:
                    state["fail_next"] -= 1
                    self._send(503, {"error": {"message": "warming up"}})
                    return True
            return False

        def do_GET(self):
            if not self._refused():
                self._send(200, {"object": "list", "data": [{"id": "grader", "object": "model", "created": 0,
                                                             "owned_by": "test"}]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            if self._refused():
                return
            text = "I like turtles." if "GARBLE" in body["messages"][-1]["content"] else "4"
            self._send(200, {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": text}}]})

    server = ThreadingHTTPServer(("127.0.0.1", _free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{server.server_address[1]}", "state": state}
    server.shutdown()
    thread.join(timeout=10)


def test_raw_helpsteer2_annotated_by_the_local_judge_prepares_with_the_default_dimensions(tiny_model_dir, tmp_path):
    src = write_jsonl(tmp_path / "hs2.jsonl", hs2_rows())
    authors = ["overall", "helpfulness", "correctness", DIM]   # AMoPO's defaults, as its authors trained
    with pytest.raises(DataError, match=f"'{DIM}' is requested but no record scores it"):
        prepare(PrepareConfig(data_source=str(src), data_format="helpsteer2", output=str(tmp_path / "before"),
                              dimensions=authors), echo=None)

    out = tmp_path / "annotated.jsonl"
    report = annotate(AnnotateConfig(data_source=str(src), output=str(out), judge=str(tiny_model_dir), judge_top_k=512,
                                     progress=False), echo=None)
    assert report["counts"] == {"rows": 6, "responses": 6, "already_scored": 0, "to_score": 6, "asked": 6,
                                "from_cache": 0, "scored": 6, "unparseable": 0}
    rows = read_jsonl(out)
    prompt = load_rubric_prompt("v1", KNOWN[DIM])
    for original, row in zip(hs2_rows(), [dict(r) for r in rows]):
        prov = row.pop(f"{DIM}_provenance")
        level = row.pop(DIM)
        assert row == original   # nothing else changes
        assert isinstance(level, int) and 1 <= level <= 5
        assert abs(level - prov["value"]) <= 0.5   # the expected level, rounded to the nearest level
        assert prov["judge"] == str(tiny_model_dir) and prov["judge_kind"] == "local-logprobs"
        assert (prov["prompt"], prov["prompt_version"], prov["status"]) == ("annotate", "1", "scored")
        assert prov["prompts_sha256"] == prompt.identity["prompts_sha256"] and prov["raw"].startswith("P(1)=")
    saved = json.loads((tmp_path / "annotated.jsonl.annotate-report.json").read_text())
    assert saved["counts"] == report["counts"] and saved["prompt"]["prompt_version"] == "1"
    assert (tmp_path / "annotated.jsonl.annotate-cache.jsonl").is_file()

    manifest = prepare(PrepareConfig(data_source=str(out), data_format="helpsteer2", output=str(tmp_path / "data"),
                                     eval_fraction=0.0, dimensions=authors), echo=None)
    assert [(d["name"], d["low"], d["high"]) for d in manifest["dimensions"]] == [
        ("overall", None, None), ("helpfulness", 0, 4), ("correctness", 0, 4), (DIM, 1, 5)]
    assert manifest["counts"]["train"] == 3
    prepared = read_jsonl(tmp_path / "data" / "train.jsonl")
    assert [p["chosen"][DIM] for p in prepared] == [rows[i][DIM] for i in (0, 2, 4)]
    assert [p["rejected"][DIM] for p in prepared] == [rows[i][DIM] for i in (1, 3, 5)]


def test_parquet_rows_through_the_cli(tiny_model_dir, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{**row, DIM: None} for row in hs2_rows()]   # a column of nulls ...
    rows[1][DIM] = 2                                     # ... and one score: kept, not asked
    src = tmp_path / "hs2.parquet"
    pq.write_table(pa.Table.from_pylist(rows), str(src))
    out = tmp_path / "annotated.parquet"
    rc = main(["annotate", "--data-source", str(src), "--output", str(out), "--judge", str(tiny_model_dir),
               "--judge-top-k", "512", "--chunk-size", "4", "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0 and f"output_path: {out}" in printed and "5 asked" in printed
    written = pq.read_table(str(out)).to_pylist()
    assert written[1][DIM] == 2 and written[1][f"{DIM}_provenance"] is None
    others = [r for i, r in enumerate(written) if i != 1]
    assert all(1 <= r[DIM] <= 5 and r[f"{DIM}_provenance"]["status"] == "scored" for r in others)
    manifest = prepare(PrepareConfig(data_source=str(out), data_format="helpsteer2", output=str(tmp_path / "data"),
                                     eval_fraction=0.0), echo=None)
    assert manifest["counts"]["train"] == 3


def test_an_interrupted_run_resumes_asking_only_the_rest(tiny_model_dir, tmp_path):
    src = write_jsonl(tmp_path / "hs2.jsonl", hs2_rows())
    out = tmp_path / "annotated.jsonl"
    cfg = AnnotateConfig(data_source=str(src), output=str(out), chunk_size=2, progress=False)
    cache_file = tmp_path / "annotated.jsonl.annotate-cache.jsonl"

    first = counting_judge(tiny_model_dir, stop_after=4)
    with pytest.raises(KeyboardInterrupt):
        annotate(cfg, judge=first, echo=None)
    assert first.asked == 4 and not out.exists()          # nothing half-written ...
    assert len(read_jsonl(cache_file)) == 4               # ... and what was answered is kept

    second = counting_judge(tiny_model_dir)
    report = annotate(cfg, judge=second, echo=None)
    assert second.asked == 2 and (report["counts"]["asked"], report["counts"]["from_cache"]) == (2, 4)
    assert all(DIM in row for row in read_jsonl(out)) and len(read_jsonl(cache_file)) == 6

    third = counting_judge(tiny_model_dir)
    assert annotate(cfg, judge=third, echo=None)["counts"]["asked"] == 0 and third.asked == 0
    other = counting_judge(tiny_model_dir, top_k=500)     # another judge identity: asked again
    assert annotate(cfg, judge=other, echo=None)["counts"]["asked"] == 6 and other.asked == 6


def test_unparseable_verdicts_are_counted_reported_and_never_scored(judge_server, tmp_path):
    def record(i: int, chosen: str, rejected: str) -> dict:
        return {"prompt": f"Question {i}: name a fruit.",
                "chosen": {"response": chosen, "helpfulness": 4, "correctness": 4},
                "rejected": {"response": rejected, "helpfulness": 1, "correctness": 1}}

    src = write_jsonl(tmp_path / "pairs.jsonl", [record(1, "Apple.", "Rock."), record(2, "Pear GARBLE.", "Stone."),
                                                 record(3, "Plum.", "Sand GARBLE.")])
    out = tmp_path / "annotated.jsonl"
    report = annotate(AnnotateConfig(data_source=str(src), output=str(out), data_format="amopo", judge=judge_server["url"],
                                     progress=False), echo=None)
    assert (report["counts"]["scored"], report["counts"]["unparseable"]) == (4, 2)
    saved = json.loads((tmp_path / "annotated.jsonl.annotate-report.json").read_text())
    assert [(e["line"], e["side"], e["raw"]) for e in saved["unparseable_examples"]] == [
        (2, "chosen", "I like turtles."), (3, "rejected", "I like turtles.")]
    assert saved["judge"]["judge_url"] == judge_server["url"] + "/v1"

    records = read_jsonl(out)
    assert records[0]["chosen"][DIM] == 4 and records[0]["rejected"][DIM] == 4
    assert DIM not in records[1]["chosen"] and DIM not in records[2]["rejected"]
    prov = records[1][f"{DIM}_provenance"]["chosen"]
    assert (prov["status"], prov["value"], prov["raw"], prov["judge"]) == ("unparseable", None, "I like turtles.",
                                                                           "grader")

    # prepare: a chosen response without the score stops it (file, line, field) ...
    with pytest.raises(DataError, match=rf"annotated.jsonl:2 field 'chosen.{DIM}': no score for requested"):
        prepare(PrepareConfig(data_source=str(out), output=str(tmp_path / "data"), eval_fraction=0.0), echo=None)
    # ... unless skipped and counted; a rejected response without it is accepted.
    manifest = prepare(PrepareConfig(data_source=str(out), output=str(tmp_path / "data"), eval_fraction=0.0,
                                     skip_invalid=True), echo=None)
    assert manifest["counts"]["train"] == 2 and manifest["invalid"]["by_reason"] == {"missing_score": 1}
    assert DIM not in read_jsonl(tmp_path / "data" / "train.jsonl")[1]["rejected"]


def test_endpoint_judge_retries_with_back_off_then_answers(judge_server, tmp_path):
    state = judge_server["state"]
    src = write_jsonl(tmp_path / "hs2.jsonl", hs2_rows())
    before = state["requests"]
    state["fail_next"] = 2
    report = annotate(AnnotateConfig(data_source=str(src), output=str(tmp_path / "out.jsonl"), judge=judge_server["url"],
                                     judge_model_name="grader", retries=3, concurrency=1, progress=False), echo=None)
    assert report["counts"]["scored"] == 6 and state["requests"] - before == 6 + 2 and state["fail_next"] == 0
    assert {row[DIM] for row in read_jsonl(tmp_path / "out.jsonl")} == {4}


def _cli_error(capsys, args: list[str]) -> str:
    rc = main(["annotate", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    return err


def test_unreachable_judge_endpoint_is_one_clear_line_naming_the_url(tmp_path, capsys):
    src = write_jsonl(tmp_path / "hs2.jsonl", hs2_rows())
    url = f"http://127.0.0.1:{_free_port()}"
    err = _cli_error(capsys, ["--data-source", str(src), "--output", str(tmp_path / "out.jsonl"), "--judge", url,
                              "--retries", "1", "--timeout", "5", "--no-progress"])
    assert err.startswith(f"amopo annotate: error: {url}/v1: ") and "unreachable after 1 retries with back-off" in err
    assert not (tmp_path / "out.jsonl").exists()


BAD_INPUT = {
    "missing_file": r"missing.jsonl: no such file",
    "missing_amopo_file": r"missing.jsonl: no such file",
    "unknown_dimension": r"option 'dimension': 'politeness' is not a known dimension; a judge can score: "
                         r"helpfulness, correctness",
    "holistic_dimension": r"option 'dimension': 'overall' is holistic",
    "row_without_prompt": r"in.jsonl:2 field 'prompt': missing column",
    "record_without_prompt": r"in.jsonl:1 field 'prompt': missing field",
    "not_json": r"in.jsonl:3: not valid JSON",
    "bad_existing_score": r"in.jsonl:1 field 'instruction_following': score 9 is outside the "
                          r"instruction_following scale 1 to 5",
    "output_is_input": r"option 'output': .*in.jsonl is the input file",
    "parquet_for_amopo": r"option 'output': .*out.parquet must end in .jsonl for the amopo format",
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_clear_error_naming_file_line_and_field(case, tmp_path, capsys):
    expected = BAD_INPUT[case]
    src = tmp_path / "in.jsonl"
    rows = hs2_rows()
    args = {"--data-source": str(src), "--output": str(tmp_path / "out.jsonl"), "--data-format": "helpsteer2"}
    if case == "missing_file":
        args["--data-source"] = str(tmp_path / "missing.jsonl")
    elif case == "missing_amopo_file":
        args.update({"--data-source": str(tmp_path / "missing.jsonl"), "--data-format": "amopo"})
    elif case == "unknown_dimension":
        args["--dimension"] = "politeness"
    elif case == "holistic_dimension":
        args["--dimension"] = "overall"
    elif case == "row_without_prompt":
        del rows[1]["prompt"]
    elif case == "record_without_prompt":
        rows = [{"chosen": {"response": "a"}, "rejected": {"response": "b"}}]
        args["--data-format"] = "amopo"
    elif case == "bad_existing_score":
        rows[0][DIM] = 9
    elif case == "output_is_input":
        args["--output"] = str(src)
    elif case == "parquet_for_amopo":
        args.update({"--data-format": "amopo", "--output": str(tmp_path / "out.parquet")})
    write_jsonl(src, rows)
    if case == "not_json":
        src.write_text(src.read_text().replace(json.dumps(rows[2]), "{not json", 1))
    err = _cli_error(capsys, [part for pair in args.items() for part in pair] + ["--no-progress"])
    assert err.startswith("amopo annotate: error: ")
    assert re.search(expected, err), err
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "out.jsonl.annotate-cache.jsonl").exists()


def test_the_helpsteer2_reader_takes_annotated_columns(tmp_path):
    rows = hs2_rows()
    rows[0][DIM], rows[1][DIM] = 5, None     # a score, and "not scored"
    result = read_helpsteer2(str(write_jsonl(tmp_path / "hs2.jsonl", rows)))
    assert result.pairs[0].chosen.scores[DIM] == 5.0 and DIM not in result.pairs[0].rejected.scores
    rows[1][DIM] = "high"
    with pytest.raises(DataError, match=rf"hs2.jsonl:2 field '{DIM}': expected a finite number, got 'high'"):
        read_helpsteer2(str(write_jsonl(tmp_path / "hs2.jsonl", rows)))


# --- the pipeline step before prepare -------------------------------------------------------------

def test_the_pipeline_step_annotates_both_splits_and_prepare_reads_them(tiny_model_dir, tmp_path):
    from kfp import dsl

    from amopo.annotate.step import annotate_sources, annotated_inputs
    from components.annotate import annotate_data
    from components.prepare import prepare_data

    train, held = write_jsonl(tmp_path / "train.jsonl", hs2_rows()), write_jsonl(tmp_path / "eval.jsonl", hs2_rows()[:4])
    out = dsl.Dataset(name="annotated", uri=str(tmp_path / "annotated"), metadata={})
    scored = annotate_data.python_func(data_source=str(train), data_format="helpsteer2", eval_source=str(held),
                                       dimension=DIM, judge=str(tiny_model_dir), judge_model_name="",
                                       annotate_options={"judge_top_k": 512, "progress": False}, annotated=out)
    assert scored == 10 and out.metadata["unparseable"] == 0
    assert out.metadata["files"] == {"train": "train.jsonl", "eval": "eval.jsonl"}
    files = annotated_inputs(out.path)
    assert files == (str(tmp_path / "annotated" / "train.jsonl"), str(tmp_path / "annotated" / "eval.jsonl"))
    assert all(DIM in row for row in read_jsonl(Path(files[1])))
    record = json.loads((tmp_path / "annotated" / "annotation.json").read_text())
    assert record["sources"] == {"train": str(train), "eval": str(held)} and record["counts"]["eval"]["scored"] == 4

    dataset = dsl.Dataset(name="dataset", uri=str(tmp_path / "data"), metadata={})
    pairs = prepare_data.python_func(data_source=str(train), data_format="helpsteer2", eval_source=str(held),
                                     dimensions=f"overall,helpfulness,{DIM}", base_model="", max_length=256,
                                     prepare_options={}, dataset=dataset, annotated=out)
    assert pairs == 3 and dataset.metadata["eval_pairs"] == 2 and DIM in dataset.metadata["dimensions"]

    # no dimension: nothing annotated, prepare reads the data as given (and so stops on the missing score)
    skipped = annotate_sources(tmp_path / "none", str(train), "helpsteer2", "", "", judge=str(tiny_model_dir))
    assert skipped["dimension"] is None and annotated_inputs(tmp_path / "none") is None
    with pytest.raises(DataError, match=f"'{DIM}' is requested but no record scores it"):
        prepare_data.python_func(data_source=str(train), data_format="helpsteer2", eval_source="",
                                 dimensions=f"overall,{DIM}", base_model="", max_length=256, prepare_options={},
                                 dataset=dsl.Dataset(name="d", uri=str(tmp_path / "d2"), metadata={}),
                                 annotated=dsl.Dataset(name="a", uri=str(tmp_path / "none"), metadata={}))


def test_the_pipeline_step_refuses_options_that_its_parameters_set(tmp_path):
    from amopo.annotate.step import annotate_sources
    from amopo.errors import ConfigError

    with pytest.raises(ConfigError, match="annotate options: judge, output come from the pipeline's own parameters"):
        annotate_sources(tmp_path, "sample", "amopo", "", DIM, judge="x", options={"output": "o.jsonl", "judge": "y"})
    assert not (tmp_path / "annotation.json").exists()
