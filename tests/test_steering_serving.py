"""Steering on the endpoint: ``dimension_targets`` on the OpenAI, v1 and v2 routes of `amopo serve`,
and the client-side helper for endpoints that are not ours.

The served model is the tiny model trained for a few seconds on verbosity pairs in both orientations
(helpers.training.train_verbosity_model), so that verbosity 0 gives a short answer and 4 a long one.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from amopo.data.dimensions import KNOWN
from amopo.data.prompts import conditioning_spec, steered_user_text
from amopo.errors import SteeringError
from amopo.steering import applied_targets, conditioned_messages, load_spec
from helpers.processes import metric, start_amopo_server
from helpers.records import verbosity_prompts
from helpers.training import train_verbosity_model

PROMPTS = verbosity_prompts(8)     # the training prompts; the answers are asked for on these
MAX_PROMPT, MAX_TOKENS = 128, 48
LOW, HIGH = {"verbosity": 0}, {"verbosity": 4}


@pytest.fixture(scope="module")
def steer_model(tiny_model_dir, tmp_path_factory, mlflow_uri):
    return train_verbosity_model(tmp_path_factory.mktemp("steer-train"), tiny_model_dir, mlflow_uri, PROMPTS)


@pytest.fixture(scope="module")
def served(steer_model, tmp_path_factory):
    server, base = start_amopo_server(
        steer_model, tmp_path_factory.mktemp("steer-serve"), "--model-name", "steer",
        "--max-prompt-tokens", str(MAX_PROMPT), "--max-tokens-limit", str(MAX_TOKENS),
        "--default-max-tokens", str(MAX_TOKENS), "--max-batch-size", "8", "--torch-threads", "1")
    yield server, base
    server.stop()


@pytest.fixture(scope="module")
def base(served):
    return served[1]


@pytest.fixture(scope="module")
def client(base):
    import openai

    return openai.OpenAI(base_url=f"{base}/openai/v1", api_key="unused", max_retries=0, timeout=60)


def _ask(client, prompt: str, targets: dict | None, **kw):
    extra = {"extra_body": {"dimension_targets": targets}} if targets is not None else {}
    return client.chat.completions.create(model="steer", messages=[{"role": "user", "content": prompt}],
                                          max_tokens=MAX_TOKENS, temperature=0, **extra, **kw)


# --- the Done-when of the issue -------------------------------------------------------------------

def test_low_verbosity_gives_a_measurably_shorter_answer_than_high(client):
    low = [_ask(client, p, LOW) for p in PROMPTS[:4]]
    high = [_ask(client, p, HIGH) for p in PROMPTS[:4]]
    low_tokens = [r.usage.completion_tokens for r in low]
    high_tokens = [r.usage.completion_tokens for r in high]
    mean_low, mean_high = sum(low_tokens) / 4, sum(high_tokens) / 4
    assert mean_low * 3 < mean_high and mean_high - mean_low >= 10, (low_tokens, high_tokens)
    assert all(r.model_extra["dimension_targets"] == LOW for r in low)
    assert all(r.model_extra["dimension_targets"] == HIGH for r in high)


# --- what comes back ------------------------------------------------------------------------------

def test_the_smoke_steps_steering_measure_sees_the_shorter_answers(base, monkeypatch):
    from amopo.serving import smoke
    from amopo.serving.smoke import steering_lengths

    sent = []
    real_chat = smoke._chat
    monkeypatch.setattr(smoke, "_chat", lambda url, body, **kw: (sent.append(body), real_chat(url, body, **kw))[1])
    got = steering_lengths(base, "steer", prompts=PROMPTS[:4], max_tokens=MAX_TOKENS)
    # the form every engine takes: chat_template_kwargs, not the top-level field only amopo serve knows
    assert [b["chat_template_kwargs"] for b in sent[:1]] == [{"dimension_targets": {"verbosity": 0}}]
    assert all("dimension_targets" not in b for b in sent)
    low, high = got["mean_completion_tokens"][0], got["mean_completion_tokens"][4]
    assert got["dimension"] == "verbosity" and low < high / 2, got
    skipped = steering_lengths(base, "steer", dimension="tone", prompts=PROMPTS[:1], max_tokens=4)
    assert "unknown dimension(s) tone" in skipped["skipped"]


def test_requests_without_targets_are_as_before(client, base):
    plain = _ask(client, PROMPTS[0], None)
    assert "dimension_targets" not in (plain.model_extra or {})
    for empty in ({}, None):   # nothing requested: the prompt as sent, no field
        body = {"model": "steer", "messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": MAX_TOKENS,
                "temperature": 0, "dimension_targets": empty}
        r = httpx.post(f"{base}/openai/v1/chat/completions", json=body, timeout=60).json()
        assert "dimension_targets" not in r
        assert r["choices"][0]["message"]["content"] == plain.choices[0].message.content
        assert r["usage"]["prompt_tokens"] == plain.usage.prompt_tokens
    steered = _ask(client, PROMPTS[0], LOW)
    assert steered.usage.prompt_tokens > plain.usage.prompt_tokens   # the prefix counts


def test_chat_stream_reports_the_targets_in_its_first_chunk(client):
    plain = _ask(client, PROMPTS[1], HIGH)
    chunks = list(_ask(client, PROMPTS[1], HIGH, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].model_extra["dimension_targets"] == HIGH
    assert all("dimension_targets" not in (c.model_extra or {}) for c in chunks[1:])
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_completions_v1_and_v2_put_the_prefix_before_the_raw_text(client, base, steer_model):
    spec = load_spec(steer_model)
    prompt = PROMPTS[2]
    steered = client.completions.create(model="steer", prompt=prompt, max_tokens=12, temperature=0,
                                        extra_body={"dimension_targets": LOW})
    by_hand = client.completions.create(model="steer", prompt=steered_user_text(spec, LOW, prompt), max_tokens=12,
                                        temperature=0)
    assert steered.choices[0].text == by_hand.choices[0].text
    assert steered.usage.prompt_tokens == by_hand.usage.prompt_tokens
    assert steered.model_extra["dimension_targets"] == LOW and "dimension_targets" not in by_hand.model_extra
    chunks = list(client.completions.create(model="steer", prompt=[prompt, PROMPTS[3]], max_tokens=12, temperature=0,
                                            stream=True, extra_body={"dimension_targets": LOW}))
    assert chunks[0].model_extra["dimension_targets"] == LOW
    assert "".join(c.choices[0].text for c in chunks if c.choices and c.choices[0].index == 0) == \
        steered.choices[0].text

    v1 = httpx.post(f"{base}/v1/models/steer:predict", timeout=60,
                    json={"instances": [prompt], "parameters": {"max_tokens": 12, "dimension_targets": LOW}}).json()
    assert v1 == {"predictions": [steered.choices[0].text], "dimension_targets": LOW}
    v2 = httpx.post(f"{base}/v2/models/steer/infer", timeout=60, json={
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [prompt]}],
        "parameters": {"max_tokens": 12, "dimension_targets": json.dumps(LOW)}}).json()
    assert v2["outputs"][0]["data"] == [steered.choices[0].text]
    assert json.loads(v2["parameters"]["dimension_targets"]) == LOW
    plain_v1 = httpx.post(f"{base}/v1/models/steer:predict", timeout=60,
                          json={"instances": [prompt], "parameters": {"max_tokens": 12}}).json()
    assert list(plain_v1) == ["predictions"]


# --- chat_template_kwargs: the form vLLM and SGLang pass to the model's chat template ---------------

def _kwargs_chat(targets, **kw) -> dict:
    return {"model": "steer", "messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": MAX_TOKENS,
            "temperature": 0, "chat_template_kwargs": {"dimension_targets": targets}, **kw}


def test_chat_template_kwargs_steer_as_the_top_level_field_does(client, base):
    for targets in (LOW, HIGH):
        top = _ask(client, PROMPTS[0], targets)
        r = httpx.post(f"{base}{PATHS['chat']}", json=_kwargs_chat(targets), timeout=60).json()
        assert r["choices"][0]["message"]["content"] == top.choices[0].message.content
        assert (r["usage"]["prompt_tokens"], r["usage"]["completion_tokens"]) == \
            (top.usage.prompt_tokens, top.usage.completion_tokens)
        assert r["dimension_targets"] == targets
    via_client = client.chat.completions.create(
        model="steer", messages=[{"role": "user", "content": PROMPTS[0]}], max_tokens=MAX_TOKENS, temperature=0,
        extra_body={"chat_template_kwargs": {"dimension_targets": LOW}})
    assert via_client.choices[0].message.content == _ask(client, PROMPTS[0], LOW).choices[0].message.content
    plain = _ask(client, PROMPTS[0], None)
    for empty in ({}, {"dimension_targets": None}, {"dimension_targets": {}}):
        r = httpx.post(f"{base}{PATHS['chat']}", json={**_kwargs_chat(None), "chat_template_kwargs": empty},
                       timeout=60).json()
        assert "dimension_targets" not in r and r["choices"][0]["message"]["content"] == plain.choices[0].message.content


def test_the_trained_folder_carries_a_template_that_steers_like_the_server(base, steer_model):
    """Training wrote chat_template.jinja; transformers renders the server's steered prompt from it."""
    from transformers import AutoTokenizer

    from amopo.chat_template import BEGIN, TEMPLATE_FILE

    assert (steer_model / TEMPLATE_FILE).read_text().startswith(BEGIN)
    tok = AutoTokenizer.from_pretrained(str(steer_model))
    spec = load_spec(steer_model)
    messages = [{"role": "user", "content": PROMPTS[1]}]
    for targets in (LOW, HIGH, None):
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, dimension_targets=targets,
                                      tokenize=True, return_dict=False)
        assert ids == tok.apply_chat_template(conditioned_messages(spec, messages, targets), add_generation_prompt=True,
                                              tokenize=True, return_dict=False)
        r = httpx.post(f"{base}{PATHS['chat']}", timeout=60, json={
            "model": "steer", "messages": messages, "max_tokens": 1, "chat_template_kwargs": {"dimension_targets": targets}})
        assert r.json()["usage"]["prompt_tokens"] == len(ids)
    from jinja2.exceptions import TemplateError
    with pytest.raises(TemplateError, match="level 9 is not a number from 0 to 4"):
        tok.apply_chat_template(messages, dimension_targets={"verbosity": 9}, tokenize=False)


KWARGS_BAD = [
    (_kwargs_chat({"verbosity": 9}), "dimension_targets", ["level 9 is not a number from 0 to 4", "this model steers"]),
    (_kwargs_chat({"tone": 1}), "dimension_targets", ["unknown dimension(s) tone"]),
    (_kwargs_chat("verbosity"), "dimension_targets", ["must be an object"]),
    ({**_kwargs_chat(LOW), "chat_template_kwargs": "verbosity"}, "chat_template_kwargs",
     ["'chat_template_kwargs' must be an object", "got str"]),
    ({**_kwargs_chat(LOW), "chat_template_kwargs": {"dimension_targets": LOW, "enable_thinking": False}},
     "chat_template_kwargs", ["unsupported chat_template_kwargs enable_thinking", "only dimension_targets"]),
    (_kwargs_chat(LOW, dimension_targets=HIGH), "dimension_targets",
     ["both at the top level and in chat_template_kwargs"]),
]


@pytest.mark.parametrize("body, param, expected", KWARGS_BAD, ids=[str(i) for i in range(len(KWARGS_BAD))])
def test_bad_chat_template_kwargs_get_a_clear_400(base, body, param, expected):
    r = httpx.post(base + PATHS["chat"], json=body, timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param
    for part in expected:
        assert part in error["message"], error["message"]


def test_completions_take_no_chat_template_kwargs(base):
    r = httpx.post(base + PATHS["completions"], timeout=30,
                   json={"model": "steer", "prompt": "hi", "chat_template_kwargs": {"dimension_targets": LOW}})
    assert r.status_code == 400 and "unsupported parameter 'chat_template_kwargs'" in r.json()["error"]["message"]


# --- the client-side helper -----------------------------------------------------------------------

def test_the_client_helper_gives_the_user_turn_the_server_renders(client, steer_model):
    spec = load_spec(steer_model)
    messages = [{"role": "system", "content": "answer the question"}, {"role": "user", "content": PROMPTS[4]},
                {"role": "assistant", "content": "yes."}, {"role": "user", "content": PROMPTS[5]}]
    conditioned = conditioned_messages(spec, messages, HIGH)
    assert conditioned[:3] == messages[:3]                       # only the last user turn is steered
    assert conditioned[3]["content"] == steered_user_text(spec, HIGH, PROMPTS[5])
    assert messages[3]["content"] == PROMPTS[5]                  # the caller's list is not changed
    by_server = client.chat.completions.create(model="steer", messages=messages, max_tokens=MAX_TOKENS, temperature=0,
                                               extra_body={"dimension_targets": HIGH})
    by_client = client.chat.completions.create(model="steer", messages=conditioned, max_tokens=MAX_TOKENS,
                                               temperature=0)
    assert by_client.choices[0].message.content == by_server.choices[0].message.content
    assert by_client.usage.prompt_tokens == by_server.usage.prompt_tokens


def test_load_spec_and_helper_contract(tmp_path, tiny_model_dir, steer_model):
    spec = load_spec(steer_model)
    assert [d["name"] for d in spec["dimensions"]] == ["verbosity"]
    assert load_spec(steer_model / "amopo_conditioning.json") == spec
    assert load_spec(tiny_model_dir) is None                     # a folder without conditioning
    with pytest.raises(SteeringError, match="no such conditioning spec file"):
        load_spec(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SteeringError, match="bad.json: the conditioning spec is not valid JSON"):
        load_spec(tmp_path / "bad.json")
    (tmp_path / "newer.json").write_text(json.dumps({**spec, "prefix_version": 99}))
    with pytest.raises(SteeringError, match="prefix_version 99"):
        load_spec(tmp_path / "newer.json")
    (tmp_path / "partial.json").write_text(json.dumps({"dimensions": spec["dimensions"]}))
    with pytest.raises(SteeringError, match="missing prefix_version"):
        load_spec(tmp_path / "partial.json")

    several = conditioning_spec([KNOWN["overall"], KNOWN["helpfulness"], KNOWN["verbosity"]])
    user = [{"role": "user", "content": [{"type": "text", "text": "explain "}, {"type": "text", "text": "DNS"}]}]
    targets = {"verbosity": 1, "overall": None}
    out = conditioned_messages(several, user, targets)
    assert out[0]["content"] == steered_user_text(several, targets, "explain DNS")
    assert applied_targets(several, targets) == {"overall": None, "verbosity": 1}   # the model's order
    assert conditioned_messages(several, user, None) == user and conditioned_messages(None, user, {}) == user
    for bad, message in [({"overall": 3}, "holistic and takes no level"), ("verbosity", "must be an object"),
                         ({"verbosity": 1.5e9}, "not a number from 0 to 4"),
                         ({"style": 1}, r"unknown dimension\(s\) style; this model steers: overall \(holistic")]:
        with pytest.raises(SteeringError, match=message):
            conditioned_messages(several, user, bad)
    with pytest.raises(SteeringError, match="no dimension conditioning"):
        conditioned_messages(None, user, {"verbosity": 1})
    with pytest.raises(SteeringError, match="there is none"):
        conditioned_messages(several, [{"role": "system", "content": "x"}], {"verbosity": 1})


def test_the_client_helper_imports_no_torch():
    code = "import sys, amopo.steering; sys.exit(1 if {'torch', 'transformers'} & set(sys.modules) else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --- bad requests ---------------------------------------------------------------------------------

def _chat(targets, messages=None) -> dict:
    return {"model": "steer", "messages": messages or [{"role": "user", "content": "hi"}], "max_tokens": 2,
            "dimension_targets": targets}


ALLOWED = "this model steers: verbosity (0 to 4)"
BAD_TARGETS = [
    ("chat", _chat({"helpfulness": 3}), ["unknown dimension(s) helpfulness", ALLOWED]),
    ("chat", _chat({"verbosity": 7}), ["level 7 is not a number from 0 to 4", ALLOWED]),
    ("chat", _chat({"verbosity": -1}), ["level -1 is not a number from 0 to 4"]),
    ("chat", _chat({"verbosity": "low"}), ["level 'low' is not a number from 0 to 4"]),
    ("chat", _chat({"verbosity": True}), ["level True is not a number"]),
    ("chat", _chat({"verbosity": None}), ["level None is not a number"]),
    ("chat", _chat("verbosity"), ["must be an object", '{"verbosity": 1}']),
    ("chat", _chat([{"verbosity": 1}]), ["must be an object"]),
    ("chat", _chat(HIGH, [{"role": "system", "content": "be short"}]), ["steer the last user message"]),
    ("completions", {"model": "steer", "prompt": "hi", "dimension_targets": {"verbosity": 9}},
     ["level 9 is not a number from 0 to 4", ALLOWED]),
    ("completions", {"model": "steer", "prompt": [1, 2, 3], "dimension_targets": LOW}, ["need text prompts"]),
    ("v1", {"instances": ["hi"], "parameters": {"dimension_targets": {"colour": 1}}}, ["unknown dimension(s) colour"]),
    ("v1", {"instances": ["hi"], "parameters": {"dimension_targets": "{verbosity"}}, ["not a JSON object"]),
    ("v2", {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}],
            "parameters": {"dimension_targets": json.dumps({"verbosity": 5})}}, ["level 5 is not a number"]),
]
PATHS = {"chat": "/openai/v1/chat/completions", "completions": "/openai/v1/completions",
         "v1": "/v1/models/steer:predict", "v2": "/v2/models/steer/infer"}


@pytest.mark.parametrize("route, body, expected", BAD_TARGETS,
                         ids=[f"{i}-{route}" for i, (route, _, _) in enumerate(BAD_TARGETS)])
def test_bad_targets_get_a_clear_400(base, route, body, expected):
    r = httpx.post(base + PATHS[route], json=body, timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    message = error if isinstance(error, str) else error["message"]
    for part in expected:
        assert part in message, message
    if route in ("chat", "completions"):
        assert error["param"] == "dimension_targets"


def test_the_prompt_limit_counts_the_prefix(base, steer_model):
    from amopo.models import load_tokenizer

    tok, spec = load_tokenizer(str(steer_model)), load_spec(steer_model)

    def tokens(text: str) -> int:
        rendered = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                           tokenize=False)
        return len(tok(rendered, add_special_tokens=False)["input_ids"])

    words = 1
    while tokens(steered_user_text(spec, LOW, "cat " * words)) <= MAX_PROMPT:
        words += 1
    text = "cat " * words
    assert tokens(text) <= MAX_PROMPT, "the prefix should be what tips this prompt over the limit"
    messages = [{"role": "user", "content": text}]
    ok = httpx.post(f"{base}{PATHS['chat']}", timeout=30, json=_chat(None, messages))
    assert ok.status_code == 200, ok.text
    over = httpx.post(f"{base}{PATHS['chat']}", timeout=30, json=_chat(LOW, messages))
    assert over.status_code == 400 and f"above this server's limit of {MAX_PROMPT}" in over.json()["error"]["message"]


def test_mixed_steered_and_plain_requests_share_batches(client, base):
    jobs = [(p, t) for p in PROMPTS[:3] for t in (LOW, HIGH, None)]

    def answer(job) -> str:
        return _ask(client, *job).choices[0].message.content

    alone = [answer(job) for job in jobs]
    steps, rows = metric(base, "amopo_serving_batch_size_count"), metric(base, "amopo_serving_batch_size_sum")
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        together = list(pool.map(answer, jobs))
    assert together == alone                       # batch-mates, steered or not, do not change an answer
    rows_per_step = (metric(base, "amopo_serving_batch_size_sum") - rows) / \
        (metric(base, "amopo_serving_batch_size_count") - steps)
    assert rows_per_step > 1.5, f"{rows_per_step:.2f} requests per decoding step: they were not batched"


def test_server_is_still_up_after_the_bad_requests(served, client):
    server, _ = served
    assert server.proc.poll() is None
    assert _ask(client, PROMPTS[0], LOW).choices[0].finish_reason == "stop"
    assert "generation failed" not in server.tail(500_000)


# --- a model without conditioning, in process -----------------------------------------------------

def test_a_model_without_conditioning_answers_targets_with_a_400(tiny_model_dir):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from amopo.serving.engine import TextEngine
    from amopo.serving.kserve_compat import InvalidInput
    from amopo.serving.kserve_model import TextGenerationModel
    from amopo.serving.limits import Limits
    from amopo.serving.openai_routes import register_openai_routes

    engine = TextEngine.load(str(tiny_model_dir), limits=Limits(), max_batch_size=4, max_batch_wait_s=0.0,
                             device="cpu")
    assert engine.spec is None
    app = FastAPI()
    register_openai_routes(app, engine, "plain")
    chat = {"model": "plain", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    with TestClient(app) as http:
        r = http.post("/openai/v1/chat/completions", json={**chat, "dimension_targets": LOW})
        assert r.status_code == 400
        assert "no dimension conditioning (no amopo_conditioning.json" in r.json()["error"]["message"]
        r = http.post("/openai/v1/completions", json={"model": "plain", "prompt": "hi", "dimension_targets": LOW})
        assert r.status_code == 400 and "no dimension conditioning" in r.json()["error"]["message"]
        for empty in ({}, None):
            r = http.post("/openai/v1/chat/completions", json={**chat, "dimension_targets": empty})
            assert r.status_code == 200 and "dimension_targets" not in r.json()
    model = TextGenerationModel("plain", engine)
    with pytest.raises(InvalidInput, match="no dimension conditioning"):
        asyncio.run(model.predict({"instances": ["hi"], "parameters": {"dimension_targets": LOW}}))
    assert asyncio.run(model.predict({"instances": ["hi"], "parameters": {"max_tokens": 2}}))["predictions"]


# --- the registry carries the spec ----------------------------------------------------------------

def test_a_registered_model_is_served_with_its_spec(steer_model, tmp_path, monkeypatch):
    from amopo.registry.register import RegisterConfig, register
    from amopo.serving.server import resolve_model_dir
    from helpers.registry import make_training_output

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    train_dir = make_training_output(tmp_path / "train", steer_model)
    register(RegisterConfig(train_dir=str(train_dir), registered_model_name="steer", mlflow_tracking_uri=uri))
    monkeypatch.setenv("AMOPO_CACHE", str(tmp_path / "cache"))
    local = resolve_model_dir("models:/steer@challenger", uri)
    assert load_spec(local) == load_spec(steer_model)


def test_the_endpoint_check_steers_the_server_through_chat_template_kwargs_as_the_checkpoint(base, steer_model,
                                                                                             monkeypatch):
    """The endpoint step's steering check: the served answers at verbosity 0 and 4, asked through
    chat_template_kwargs, are the checkpoint's own greedy answers from its chat template."""
    from amopo.evaluate import endpoint_steering
    from amopo.serving import smoke

    sent = []
    real_chat = smoke._chat
    monkeypatch.setattr(endpoint_steering, "_chat", lambda url, body, **kw: (sent.append(body), real_chat(url, body, **kw))[1])
    got = endpoint_steering.compare_steering(base, "steer", steer_model, prompts=PROMPTS[:2], max_tokens=MAX_TOKENS)
    assert all(b["chat_template_kwargs"]["dimension_targets"] in (LOW, HIGH) for b in sent) and len(sent) == 4
    levels = got["dimensions"]["verbosity"]
    assert set(levels) == {0, 4} and all(v["same_answers"] == 1.0 for v in levels.values()), levels
    assert levels[0]["endpoint_tokens"] == levels[0]["checkpoint_tokens"] < levels[4]["endpoint_tokens"]


def test_the_endpoint_steering_check_skips_a_model_trained_to_steer_nothing(tiny_model_dir, steer_model, tmp_path):
    import json
    import shutil

    from amopo.evaluate.endpoint_steering import compare_steering, steered_dimensions

    assert compare_steering("http://127.0.0.1:9", "m", tiny_model_dir) is None   # no spec at all
    folder = tmp_path / "model"
    shutil.copytree(steer_model, folder)
    spec = json.loads((folder / "amopo_conditioning.json").read_text())
    assert spec["steer_trained"] == ["verbosity"] and [d["name"] for d in steered_dimensions(folder)] == ["verbosity"]
    (folder / "amopo_conditioning.json").write_text(json.dumps({**spec, "steer_trained": []}))
    assert compare_steering("http://127.0.0.1:9", "m", folder) is None


def test_the_endpoint_check_step_logs_the_served_steering(base, steer_model, tmp_path, capsys):
    from kfp import dsl

    from components.endpoint_check import check_endpoint

    model = dsl.Model(name="model", uri=str(steer_model.parent), metadata={})
    result = dsl.Metrics(name="result", uri=str(tmp_path / "result"), metadata={})
    logged = {}
    result.log_metric = lambda key, value: logged.__setitem__(key, value)
    assert check_endpoint.python_func(url=base, model_name="steer", model=model, tasks="", limit=1, tolerance=0.05,
                                      result=result) is False   # no lm-eval tasks: only steering was checked
    assert logged["steering/verbosity/0/same_answers"] == logged["steering/verbosity/4/same_answers"] == 1.0
    assert logged["steering/verbosity/0/endpoint_tokens"] < logged["steering/verbosity/4/endpoint_tokens"]
    assert "verbosity at 0 through chat_template_kwargs" in capsys.readouterr().out


def test_the_smoke_step_measures_the_dimension_the_model_was_trained_to_steer(base, steer_model, tmp_path):
    from kfp import dsl

    from components.smoke_test import smoke_test_endpoint

    model = dsl.Model(name="model", uri=str(steer_model.parent), metadata={})
    result = dsl.Markdown(name="result", uri=str(tmp_path / "smoke.md"), metadata={})
    smoke_test_endpoint.python_func(url=base, model_name="steer", prompt=PROMPTS[0], result=result, model=model)
    steer = result.metadata["steering"]
    assert steer.get("dimension") == "verbosity", steer
    assert steer["mean_completion_tokens"][0] < steer["mean_completion_tokens"][4]
