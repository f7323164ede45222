"""Endpoint judges and endpoint models over real HTTP servers.

A real tiny model is trained here for a few steps to answer "A" to anything: a judge with a total
position bias, which evaluating in both orders must cancel. It is served two ways: by the project's
own ``amopo serve`` (KServe, a subprocess) for the end-to-end evaluation, and by a small
OpenAI-compatible app in a thread (FastAPI + uvicorn, greedy generation at ``/v1/chat/completions``
and ``/v1/models``) whose failures the tests can switch on: 503s for the retries, a required key.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time

import pytest
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from amopo.errors import ConfigError
from amopo.evaluate.endpoint import ChatEndpoint, EndpointError, api_base
from amopo.evaluate.evaluate import EvaluateConfig, evaluate
from amopo.evaluate.generate import SHIPPED_INSTRUCTIONS

SERVED_NAME = "always-a"


def _train_to_answer_a(folder):
    """A tiny model fine-tuned so that its reply to any chat prompt is "A" then end-of-turn."""
    from amopo.models import load_model, load_tokenizer
    from amopo.tiny import build_tiny_model

    build_tiny_model(folder, seed=1)
    tok, model = load_tokenizer(str(folder)), load_model(str(folder))
    users = [json.loads(line)["instruction"] for line in SHIPPED_INSTRUCTIONS.read_text().splitlines()[::8]]
    users += ["[Answer A]\nfoo\n\n[Answer B]\nbar\n\nWhich answer is better? Reply with one letter, A or B."]
    target = tok.encode("A", add_special_tokens=False) + [tok.eos_token_id]
    seqs = [tok.apply_chat_template([{"role": "user", "content": u}], add_generation_prompt=True, tokenize=True,
                                    return_dict=False) for u in users]
    seqs = [list(s) + target for s in seqs]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tok.pad_token_id)
    labels = torch.full((len(seqs), width), -100)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)], mask[i, :len(s)] = torch.tensor(s), 1
        labels[i, len(s) - len(target):len(s)] = torch.tensor(target)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(20):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(str(folder))
    return tok, model.eval()


def _chat_app(tok, model, state: dict):
    app = FastAPI()

    def refuse(request: Request):
        state["requests"] += 1
        if state["fail_next"] > 0:
            state["fail_next"] -= 1
            return JSONResponse({"error": {"message": "warming up"}}, status_code=503)
        if state["api_key"] and request.headers.get("authorization") != f"Bearer {state['api_key']}":
            return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
        return None

    @app.get("/v1/models")
    def models(request: Request):
        return refuse(request) or {"object": "list", "data": [{"id": SERVED_NAME, "object": "model",
                                                               "created": 0, "owned_by": "test"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        refused = refuse(request)
        if refused:
            return refused
        body = await request.json()
        enc = tok.apply_chat_template(body["messages"], add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=min(int(body.get("max_tokens") or 16), 32), do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        new = out[0, enc["input_ids"].shape[1]:]
        text = tok.decode(new, skip_special_tokens=True)
        return {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                "model": body["model"], "choices": [{"index": 0, "finish_reason": "stop",
                                                     "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": int(enc["input_ids"].shape[1]), "completion_tokens": len(new),
                          "total_tokens": int(enc["input_ids"].shape[1]) + len(new)}}
    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    folder = tmp_path_factory.mktemp("always-a")
    tok, model = _train_to_answer_a(folder)
    state = {"requests": 0, "fail_next": 0, "api_key": None}
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(_chat_app(tok, model, state), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "test server did not start"
    yield {"url": f"http://127.0.0.1:{port}", "state": state, "model_dir": folder}
    srv.should_exit = True
    thread.join(timeout=10)


def test_api_base_forms():
    assert api_base("http://h:8080") == "http://h:8080/v1"
    assert api_base("http://h:8080/v1/") == "http://h:8080/v1"
    assert api_base("http://h:8080/v1/chat/completions") == "http://h:8080/v1"
    assert api_base("http://h/openai/v1") == "http://h/openai/v1"


@pytest.mark.slow
def test_evaluate_with_the_projects_own_server_as_model_and_judge(server, tiny_model_dir, tmp_path):
    from helpers.processes import start_amopo_server

    served, base = start_amopo_server(server["model_dir"], tmp_path, "--model-name", "always-a-served",
                                      "--torch-threads", "1")
    try:
        cfg = EvaluateConfig(model=f"{base}/openai/v1", model_tokenizer=str(server["model_dir"]),
                             baseline=str(tiny_model_dir), judge=f"{base}/openai/v1",
                             dimensions=["helpfulness"], num_instructions=4, max_new_tokens=8,
                             lm_eval_tasks=["amopo_arithmetic", "amopo_facts_mc"], lm_eval_limit=2, lc_bootstrap=10,
                             output=str(tmp_path / "eval"), mlflow=False, progress=False, concurrency=2)
        cfg.validate()
        summary = evaluate(cfg)
    finally:
        served.stop()
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    report = json.loads((tmp_path / "eval" / "report.json").read_text())

    # The served model answers "A" (generation over HTTP) …
    outputs = [json.loads(line) for line in (tmp_path / "eval" / "outputs" / "model.jsonl").read_text().splitlines()]
    assert [o["output"] for o in outputs] == ["A"] * 4 and report["decoding"]["model"]["model"] == "always-a-served"
    # … and as a judge it always names the first answer: both orders cancel that exactly.
    assert metrics["judge/first_position_rate"] == 1.0
    assert metrics["winrate/raw"] == 0.5 and metrics["winrate/ties"] == 4 and metrics["judge/unparseable_pairwise"] == 0
    # "A" is no rating: every rating is unparseable, counted, and the run still finishes.
    assert metrics["judge/unparseable_ratings"] == 8 and metrics["judge/unparseable"] == 8
    assert "dimension/helpfulness/model" in report["missing"] and "dimension/helpfulness/model" not in metrics
    samples = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert all(s["raw_model_first"] == "A" and s["score/helpfulness/model"] is None for s in samples)
    # lm-eval: generation through local-chat-completions, multiple choice through local-completions
    # (echo + logprobs on /completions, tokenised with the served model's tokenizer).
    assert metrics["lm_eval/amopo_arithmetic/exact_match/last_number"] == 0.0
    assert 0.0 <= metrics["lm_eval/amopo_facts_mc/acc"] <= 1.0 and report["lm_eval"]["skipped"] == {}
    runs = {run["model"]: run for run in report["lm_eval"]["runs"]}
    assert runs["local-chat-completions"]["tasks"] == ["amopo_arithmetic"]
    assert runs["local-completions"]["tasks"] == ["amopo_facts_mc"]
    assert runs["local-completions"]["model_args"]["base_url"] == f"{base}/openai/v1/completions"
    assert report["lm_eval"]["n-samples"]["amopo_arithmetic"]["effective"] == 2
    assert report["lm_eval"]["n-samples"]["amopo_facts_mc"]["effective"] == 2
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert summary["metrics_path"] == str(tmp_path / "eval" / "metrics.json")


def test_endpoint_multiple_choice_needs_the_served_tokenizer(tiny_model_dir):
    from types import SimpleNamespace

    from amopo.evaluate.lm_eval_tasks import _endpoint_runs

    endpoint = SimpleNamespace(model="m", retries=2, api_key=None, base="http://h/openai/v1")
    loaded = {"gen": SimpleNamespace(OUTPUT_TYPE="generate_until"), "mc": SimpleNamespace(OUTPUT_TYPE="multiple_choice"),
              "ppl": SimpleNamespace(OUTPUT_TYPE="loglikelihood_rolling")}
    runs, skipped = _endpoint_runs(endpoint, loaded, None, chat_template=True)
    assert [r["model"] for r in runs] == ["local-chat-completions"]
    assert set(skipped) == {"mc", "ppl"} and "--model-tokenizer" in skipped["mc"] and "/completions" in skipped["mc"]
    runs, skipped = _endpoint_runs(endpoint, loaded, str(tiny_model_dir), chat_template=True)
    assert skipped == {} and [r["model"] for r in runs] == ["local-chat-completions", "local-completions"]
    scored = runs[1]
    assert scored["tasks"] == [loaded["mc"], loaded["ppl"]] and scored["chat_template"] is True
    assert scored["model_args"] == {"model": "m", "num_concurrent": 1, "max_retries": 2, "tokenizer": str(tiny_model_dir),
                                    "base_url": "http://h/openai/v1/completions", "tokenizer_backend": "huggingface",
                                    "tokenized_requests": True}


def test_endpoint_judge_reads_replies_over_http(server):
    from amopo.evaluate.judge_prompts import load_prompt_set
    from amopo.evaluate.judges import EndpointJudge

    judge = EndpointJudge(ChatEndpoint(server["url"]), load_prompt_set("v1"), concurrency=2, progress=False)
    verdicts = judge.compare([("Say hi.", "hi", "hello"), ("Say hi.", "hello", "hi")])
    assert [(v.value, v.raw) for v in verdicts] == [(1.0, "A"), (1.0, "A")]
    assert [(v.value, v.raw) for v in judge.rate([("Say hi.", "hi", "correctness")])] == [(None, "A")]


def test_endpoint_retries_with_back_off_then_succeeds(server):
    state = server["state"]
    endpoint = ChatEndpoint(server["url"], SERVED_NAME, retries=3)
    before = state["requests"]
    state["fail_next"] = 2
    reply = endpoint.chat([{"role": "user", "content": "hi"}], max_tokens=4)
    assert reply == "A" and state["requests"] - before == 3 and state["fail_next"] == 0


def test_endpoint_that_keeps_failing_gives_a_clear_error(server):
    state = server["state"]
    endpoint = ChatEndpoint(server["url"], SERVED_NAME, retries=1)
    state["fail_next"] = 5
    try:
        with pytest.raises(EndpointError, match=r"/v1: chat completion with model 'always-a' failed with HTTP 503"):
            endpoint.chat([{"role": "user", "content": "hi"}], max_tokens=4)
    finally:
        state["fail_next"] = 0


def test_unreachable_endpoint_gives_a_clear_error():
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(EndpointError, match=rf"{url}/v1: listing models .* unreachable after 1 retries with back-off"):
        ChatEndpoint(url, retries=1, timeout=5)


def test_api_key_comes_from_the_named_environment_variable(server, monkeypatch):
    state = server["state"]
    state["api_key"] = "s3cret"
    try:
        monkeypatch.delenv("AMOPO_TEST_KEY", raising=False)
        with pytest.raises(ConfigError, match="AMOPO_TEST_KEY"):
            ChatEndpoint(server["url"], SERVED_NAME, api_key_env="AMOPO_TEST_KEY")
        monkeypatch.setenv("AMOPO_TEST_KEY", "wrong")
        with pytest.raises(EndpointError, match="HTTP 401"):
            ChatEndpoint(server["url"], api_key_env="AMOPO_TEST_KEY", retries=0)
        monkeypatch.setenv("AMOPO_TEST_KEY", "s3cret")
        assert ChatEndpoint(server["url"], api_key_env="AMOPO_TEST_KEY").model == SERVED_NAME
    finally:
        state["api_key"] = None
