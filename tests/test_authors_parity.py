"""``prompt_style: authors`` reproduces the AMoPO authors' released preprocessing token for token, and
a model trained in a style is steered in that style only (client helper and server alike).

The reference is tests/data/authors_conditioning.json: three records and, for each of their four
objects, the prompt segments the authors' code (Javkonline/AMoPO, pairwise_multi_object.py with
LLaMA-Factory's ``qwen`` template) produces for them; its ``_about`` says how they were derived.
LLaMA-Factory encodes the system segment and the user segment each on its own and concatenates
them; the tiny tokenizer (ChatML, like Qwen2.5's) stands in for Qwen's here.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from amopo.cli import main
from amopo.data import prompts
from amopo.data.dimensions import KNOWN
from amopo.data.prompt_styles import AUTHORS, QWEN_DEFAULT_SYSTEM
from amopo.data.tokenize import load_tokenized
from amopo.errors import ConfigError, ModelError, SteeringError
from amopo.steering import check_spec, conditioned_messages, load_spec
from tests.helpers.records import write_jsonl
from tests.helpers.training import train_config

DOC = json.loads((Path(__file__).parent / "data" / "authors_conditioning.json").read_text(encoding="utf-8"))
RECORDS = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in DOC["records"]]
DIMS = [KNOWN[name] for name in DOC["dimensions"]]
USER_HEAD, USER_TAIL = "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def their_prompt_ids(tokenizer, user_segment: str) -> list[int]:
    """Prompt ids as LLaMA-Factory builds them: each template segment encoded on its own."""
    return _ids(tokenizer, DOC["system_segment"]) + _ids(tokenizer, user_segment)


def their_user_text(record: dict, k: int) -> str:
    """The user turn's content of the authors' x*_k (accumulated: P_k … P_1 x)."""
    segment = record["expected_user_segments"][k]
    assert segment.startswith(USER_HEAD) and segment.endswith(USER_TAIL)
    return segment[len(USER_HEAD):-len(USER_TAIL)]


def their_own_prefix(record: dict, k: int) -> str:
    """P_k alone: x*_k minus x*_{k-1} (minus x for the first), read off their accumulated prompts."""
    rest = record["prompt"] if k == 0 else their_user_text(record, k - 1)
    text = their_user_text(record, k)
    assert text.endswith(rest)
    return text[: len(text) - len(rest)]


def _by_prompt(records: list[dict]) -> dict[str, dict]:
    return {r["prompt"]: r for r in records}


@pytest.fixture(scope="module")
def authors_data(tmp_path_factory, tiny_model_dir) -> Path:
    """The fixture's records prepared by the CLI in the authors' style, accumulated, tokenised for the tiny model."""
    root = tmp_path_factory.mktemp("authors")
    source = write_jsonl(root / "records.jsonl", RECORDS)
    rc = main(["prepare", "--data-source", str(source), "--output", str(root / "data"), "--prompt-style", "authors",
               "--accumulate-prefixes", "--eval-fraction", "0", "--dimensions", *DOC["dimensions"],
               "--base-model", str(tiny_model_dir), "--max-length", "2040"])
    assert rc == 0
    return root / "data"


@pytest.fixture(scope="module")
def authors_model(authors_data, tiny_model_dir, mlflow_uri, tmp_path_factory) -> Path:
    """The tiny model after one AMoPO step on the authors-style data; its folder carries the spec."""
    from amopo.train.loop import train

    out = tmp_path_factory.mktemp("authors-train") / "run"
    train(train_config(authors_data, tiny_model_dir, out, mlflow_uri, max_steps=1, batch_size=1, max_length=2040,
                       accumulate_prefixes=True, mixed_precision="no"))
    return out / "model"


# --- training prompts ------------------------------------------------------------------------------

def test_prepare_in_the_authors_style_gives_their_prompt_and_response_tokens(authors_data, tiny_tokenizer):
    manifest = json.loads((authors_data / "prepare.json").read_text())
    assert manifest["config"]["prompt_style"] == "authors"
    split = load_tokenized(authors_data, tiny_tokenizer, "train", max_length=2040, accumulate_prefixes=True)
    assert split.from_cache and split.dimensions == DOC["dimensions"] and split.report["truncated_prompts"] == 0
    train = [json.loads(line) for line in (authors_data / "train.jsonl").read_text().splitlines()]
    expected = _by_prompt(DOC["records"])
    assert len(split.rows) == len(expected) == 3
    eos = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    for row in split.rows:
        record = expected[train[row["id"]]["prompt"]]
        for k, segment in enumerate(record["expected_user_segments"]):
            assert list(row["prompt_ids"][k]) == their_prompt_ids(tiny_tokenizer, segment), (row["id"], k)
        # LLaMA-Factory: encode(response) + [eos], eos replaced by <|im_end|> for the qwen template.
        assert list(row["chosen_ids"]) == _ids(tiny_tokenizer, record["chosen"]["response"]) + [eos]
        assert list(row["rejected_ids"]) == _ids(tiny_tokenizer, record["rejected"]["response"]) + [eos]
        # The baselines' plain prompt: the same system turn, the user text alone.
        plain = f"{USER_HEAD}{record['prompt']}{USER_TAIL}"
        assert list(row["plain_prompt_ids"]) == their_prompt_ids(tiny_tokenizer, plain)


def test_their_wording_order_and_system_prompt_in_text():
    record = DOC["records"][0]
    texts = [prompts.conditioned_text(p, record["prompt"], AUTHORS) for p in prompts.dimension_prefixes(
        DIMS, [None, 4.0, 4.0, 5.0], accumulate=True, style=AUTHORS)]
    assert texts == [their_user_text(record, k) for k in range(4)]
    assert DOC["system_segment"] == f"<|im_start|>system\n{QWEN_DEFAULT_SYSTEM}<|im_end|>\n"
    newest = texts[3]
    assert newest.startswith("You are an expert in question answering, and you need to focus on the "
                             "instruction_following dimension")
    assert newest.endswith("integrating the dimensions of helpfulness, correctness, instruction following"
                           + record["prompt"])


def test_without_accumulation_each_prompt_carries_its_own_instruction_only():
    for record in DOC["records"]:
        scores = [None] + [float(record["chosen"][d]) for d in DOC["dimensions"][1:]]
        own = prompts.dimension_prefixes(DIMS, scores, style=AUTHORS)
        assert own == [their_own_prefix(record, k) for k in range(4)]
        assert prompts.conditioned_text(own[2], record["prompt"], AUTHORS) == own[2] + record["prompt"]


def test_the_amopo_style_stays_the_default(tmp_path):
    from amopo.data.prepare import PrepareConfig

    assert PrepareConfig().prompt_style == "amopo"
    text = prompts.conditioned_text(prompts.dimension_prefixes(DIMS, [None, 4.0, 4.0, 5.0])[1], "Hi")
    assert text == "Respond at helpfulness level 4 on a scale of 0 to 4 (how well the response meets the " \
                   "user's need).\n\nHi"


# --- bad input -------------------------------------------------------------------------------------

def test_an_unknown_prompt_style_is_refused_listing_the_allowed_ones(tmp_path, capsys):
    source = write_jsonl(tmp_path / "records.jsonl", RECORDS)
    rc = main(["prepare", "--data-source", str(source), "--output", str(tmp_path / "out"), "--prompt-style", "qwen"])
    err = capsys.readouterr().err
    assert rc == 2 and "option 'prompt_style': unknown prompt style 'qwen'; allowed: amopo, authors" in err, err
    assert not (tmp_path / "out").exists()


def test_a_manifest_with_an_unknown_style_is_refused_naming_it(authors_data, tmp_path, tiny_tokenizer):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(authors_data, copy)
    manifest = json.loads((copy / "prepare.json").read_text())
    manifest["config"]["prompt_style"] = "fancy"
    (copy / "prepare.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"prepare\.json: config\.prompt_style: unknown prompt style 'fancy'; "
                                          r"allowed: amopo, authors"):
        load_tokenized(copy, tiny_tokenizer, "train", max_length=2040)


def test_a_spec_with_an_unknown_style_is_refused(tmp_path):
    spec = prompts.conditioning_spec(DIMS, style=AUTHORS)
    (tmp_path / "spec.json").write_text(json.dumps({**spec, "prompt_style": "fancy"}))
    with pytest.raises(SteeringError, match="unknown prompt_style 'fancy'; this amopo knows amopo, authors"):
        load_spec(tmp_path / "spec.json")
    with pytest.raises(SteeringError, match="prompt_style 'authors' needs prefix_version 2"):
        check_spec({**spec, "prefix_version": 1})


def test_a_system_turn_needs_a_chat_template(tiny_model_dir):
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    plain.chat_template = None
    with pytest.raises(ModelError, match="no chat template to render it"):
        prompts.render_prompt(plain, "Hi", QWEN_DEFAULT_SYSTEM)


# --- steering in the model's style -----------------------------------------------------------------

def _all_targets(record: dict) -> dict:
    return {"overall": None, **{d: record["chosen"][d] for d in DOC["dimensions"][1:]}}


def test_a_model_trained_in_the_authors_style_records_it(authors_model):
    spec = load_spec(authors_model)
    assert (spec["prompt_style"], spec["prefix_version"], spec["system"]) == ("authors", 2, QWEN_DEFAULT_SYSTEM)
    assert spec["accumulate_prefixes"] is True and spec["separator"] == spec["join"] == ""


def test_conditioned_messages_steer_in_the_models_style(authors_model, tiny_tokenizer):
    spec = load_spec(authors_model)
    for record in DOC["records"]:
        x = [{"role": "user", "content": record["prompt"]}]
        every = conditioned_messages(spec, x, _all_targets(record))
        assert every == [{"role": "system", "content": QWEN_DEFAULT_SYSTEM},
                         {"role": "user", "content": their_user_text(record, 3)}]
        # Every dimension at the chosen levels is the last training prompt, token for token.
        ids = _ids(tiny_tokenizer, tiny_tokenizer.apply_chat_template(every, add_generation_prompt=True,
                                                                      tokenize=False))
        assert ids == their_prompt_ids(tiny_tokenizer, record["expected_user_segments"][3])
        one = conditioned_messages(spec, x, {"correctness": record["chosen"]["correctness"]})
        assert one[1]["content"] == their_own_prefix(record, 2) + record["prompt"]
    own_system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    steered = conditioned_messages(spec, own_system, {"helpfulness": 2})
    assert [m["role"] for m in steered] == ["system", "user"] and steered[0]["content"] == "Be brief."
    assert conditioned_messages(spec, own_system[1:], None) == own_system[1:]


def test_a_spec_without_a_style_is_steered_in_the_amopo_style():
    spec = prompts.conditioning_spec(DIMS)
    del spec["prompt_style"], spec["order"], spec["system"]     # as written before styles existed
    (user,) = conditioned_messages(spec, [{"role": "user", "content": "Hi"}], {"helpfulness": 2, "correctness": 1})
    assert user["content"] == ("Respond at helpfulness level 2 on a scale of 0 to 4 (how well the response meets "
                               "the user's need).\nRespond at correctness level 1 on a scale of 0 to 4 (factual "
                               "accuracy and inclusion of all pertinent facts).\n\nHi")


def test_the_server_builds_steered_prompts_in_the_models_style(authors_model, tiny_tokenizer, monkeypatch):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from amopo.serving.engine import TextEngine
    from amopo.serving.kserve_model import TextGenerationModel
    from amopo.serving.limits import Limits
    from amopo.serving.openai_routes import register_openai_routes

    engine = TextEngine.load(str(authors_model), limits=Limits(max_prompt_tokens=2040), max_batch_size=2,
                             max_batch_wait_s=0.0, device="cpu")
    seen: list = []
    for name in ("encode_chat", "encode_text"):
        real = getattr(engine, name)
        monkeypatch.setattr(engine, name, lambda value, real=real: seen.append(value) or real(value))
    app = FastAPI()
    register_openai_routes(app, engine, "authors")
    record = DOC["records"][1]
    targets = _all_targets(record)
    with TestClient(app) as http:
        r = http.post("/openai/v1/chat/completions", json={
            "model": "authors", "messages": [{"role": "user", "content": record["prompt"]}], "max_tokens": 1,
            "dimension_targets": targets})
        assert r.status_code == 200, r.text
        assert r.json()["dimension_targets"] == targets
        expected_ids = their_prompt_ids(tiny_tokenizer, record["expected_user_segments"][3])
        assert r.json()["usage"]["prompt_tokens"] == len(expected_ids)
        assert seen.pop() == [{"role": "system", "content": QWEN_DEFAULT_SYSTEM},
                              {"role": "user", "content": their_user_text(record, 3)}]
        # Raw text routes put the prefix before the prompt in the model's style: no separator.
        r = http.post("/openai/v1/completions", json={"model": "authors", "prompt": record["prompt"], "max_tokens": 1,
                                                      "dimension_targets": {"helpfulness": 3}})
        assert r.status_code == 200, r.text
        assert seen.pop() == their_own_prefix(record, 1) + record["prompt"]
    model = TextGenerationModel("authors", engine)
    asyncio.run(model.predict({"instances": [record["prompt"]],
                               "parameters": {"max_tokens": 1, "dimension_targets": {"helpfulness": 3}}}))
    assert seen.pop() == their_own_prefix(record, 1) + record["prompt"]


def test_evaluation_asks_steered_prompts_in_the_models_style(authors_model, tiny_tokenizer, monkeypatch):
    from types import SimpleNamespace

    from amopo.data.readers import parse_record
    from amopo.evaluate import evaluate, generate, steer_accuracy

    spec = load_spec(authors_model)
    record = DOC["records"][0]
    pair = parse_record(RECORDS[0], file="records.jsonl", line=1)
    # Held-out steering accuracy: the prompt of the high request is the one chat steering sends.
    sequences = steer_accuracy.pair_sequences(tiny_tokenizer, spec, pair, KNOWN["correctness"], max_length=2040)
    served = conditioned_messages(spec, [{"role": "user", "content": record["prompt"]}], {"correctness": 4.0})
    assert sequences[0][0] == _ids(tiny_tokenizer, tiny_tokenizer.apply_chat_template(
        served, add_generation_prompt=True, tokenize=False))
    assert sequences[0][0][:len(_ids(tiny_tokenizer, DOC["system_segment"]))] == _ids(tiny_tokenizer,
                                                                                     DOC["system_segment"])
    # Judged steerability: the model and the base model answer after the style's system turn.
    _, info = generate.generate_local(str(authors_model), ["Hi"], max_new_tokens=1, progress=False,
                                      system=prompts.steering_system(spec))
    assert info["example_prompt"].startswith(DOC["system_segment"])
    systems = []
    monkeypatch.setattr(evaluate, "_answers", lambda spec_, name, texts, cfg, who, system=None:
                        systems.append(system) or ([""] * len(texts), {}))
    cfg = SimpleNamespace(steer_num_instructions=1, model="m", model_name=None, baseline_name=None)
    steering = evaluate._Steering(spec, [KNOWN["correctness"]], [KNOWN["correctness"]], [])
    evaluate._steer_answers(cfg, steering, [{"id": "1", "instruction": "Hi"}], "base", {})
    assert systems == [QWEN_DEFAULT_SYSTEM, QWEN_DEFAULT_SYSTEM]
