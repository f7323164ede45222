"""`amopo serve` as a subprocess on 127.0.0.1 serving the tiny model, used by clients nobody here wrote:
the `openai` client, `lm_eval --model local-chat-completions`, KServe's v2 REST client, and httpx for
the requests a polite client would never send."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from helpers.processes import VENV_BIN, metric, start_amopo_server

KEY = "test-key"
AUTH = {"authorization": f"Bearer {KEY}"}
MAX_TOKENS, MAX_PROMPT, MAX_BODY = 32, 128, 65536
CHAT = [{"role": "user", "content": "what is the answer to the question"}]


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    server, base = start_amopo_server(
        tiny_model_dir, tmp_path_factory.mktemp("serve"), "--model-name", "tiny",
        "--max-tokens-limit", str(MAX_TOKENS), "--max-prompt-tokens", str(MAX_PROMPT),
        "--max-body-bytes", str(MAX_BODY), "--max-batch-size", "8", "--default-max-tokens", "16",
        "--torch-threads", "1",   # the tiny model gains nothing from more; shared CPUs lose a lot
        env={"AMOPO_SERVE_API_KEY": KEY})
    yield server, base
    server.stop()


@pytest.fixture(scope="module")
def base(served):
    return served[1]


@pytest.fixture(scope="module")
def client(base):
    import openai

    return openai.OpenAI(base_url=f"{base}/openai/v1", api_key=KEY, max_retries=0, timeout=60)


# --- the batched decoding loop, in process --------------------------------------------------------

def test_batched_generation_equals_transformers_generate(tiny_model_dir):
    import torch

    from amopo.models import load_model, load_tokenizer
    from amopo.serving.generation import GenerationRequest, generate

    tok, model = load_tokenizer(str(tiny_model_dir)), load_model(str(tiny_model_dir)).eval()
    prompts = ["hello", "the model answer to the question", "one two three four five six seven eight"]
    budgets = [12, 5, 9]     # rows leave the batch at different steps
    requests = [GenerationRequest(tok(p)["input_ids"], n) for p, n in zip(prompts, budgets)]
    texts, finals = ["", "", ""], [None, None, None]

    def emit(i, delta):
        assert finals[i] is None, "a delta after the final one"
        texts[i] += delta.text
        if delta.finish_reason:
            finals[i] = delta

    generate(model, tok, requests, emit, eos_ids={tok.eos_token_id}, pad_id=tok.pad_token_id)
    for i, (prompt, budget) in enumerate(zip(prompts, budgets)):
        ids = torch.tensor([tok(prompt)["input_ids"]])
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=budget, do_sample=False,
                             pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
        ref = ref[:ref.index(tok.eos_token_id)] if tok.eos_token_id in ref else ref
        assert texts[i] == tok.decode(ref, skip_special_tokens=True)
        assert finals[i].completion_tokens == len(ref)


def test_requests_joining_a_running_batch_get_the_same_text(tiny_model_dir):
    import torch

    from amopo.models import load_model, load_tokenizer
    from amopo.serving.generation import Decoder, GenerationRequest

    tok, model = load_tokenizer(str(tiny_model_dir)), load_model(str(tiny_model_dir)).eval()
    prompts = ["one two three four five six seven eight nine ten", "hi", "the model answer"]
    budgets = [4, 14, 9]   # the long prompt leaves first, so its padding columns are trimmed
    texts = ["", "", ""]

    def sink(i):
        def put(delta):
            texts[i] += delta.text
        return put

    decoder = Decoder(model, tok, eos_ids={tok.eos_token_id}, pad_id=tok.pad_token_id)
    decoder.admit([(GenerationRequest(tok(prompts[0])["input_ids"], budgets[0]), sink(0))])
    decoder.step()
    decoder.step()
    decoder.admit([(GenerationRequest(tok(p)["input_ids"], n), sink(i)) for i, (p, n) in
                   enumerate(zip(prompts[1:], budgets[1:]), start=1)])
    assert decoder.size == 3
    widths = []
    while decoder.size:
        decoder.step()
        widths.append(decoder.mask.shape[1] if decoder.mask is not None else 0)
    assert any(0 < b < a for a, b in zip(widths, widths[1:]))   # trimmed when the long prompt left
    for i, (prompt, budget) in enumerate(zip(prompts, budgets)):
        ids = torch.tensor([tok(prompt)["input_ids"]])
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=budget, do_sample=False,
                             pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
        ref = ref[:ref.index(tok.eos_token_id)] if tok.eos_token_id in ref else ref
        assert texts[i] == tok.decode(ref, skip_special_tokens=True), i


def test_serve_fails_clearly_before_loading_anything(tmp_path):
    from amopo.serving.errors import ServingError
    from amopo.serving.server import ServeConfig, serve

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServingError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve(ServeConfig(model=str(tmp_path), port=port))
    with pytest.raises(ServingError, match="not a Hugging Face model folder"):
        serve(ServeConfig(model=str(tmp_path), port=port))


# --- what KServe provides -------------------------------------------------------------------------

def test_liveness_readiness_and_metrics(base):
    assert httpx.get(f"{base}/").status_code == 200
    assert httpx.get(f"{base}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{base}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{base}/v1/models/tiny").json() == {"name": "tiny", "ready": True}
    assert httpx.get(f"{base}/v1/models/other").status_code == 404
    meta = httpx.get(f"{base}/v2/models/tiny", headers=AUTH).json()
    assert meta["inputs"][0]["datatype"] == "BYTES"
    httpx.post(f"{base}/v1/models/tiny:predict", json={"instances": ["hello"], "parameters": {"max_tokens": 2}},
               headers=AUTH)
    metrics = httpx.get(f"{base}/metrics")
    assert metrics.status_code == 200
    assert "request_predict_seconds" in metrics.text          # KServe's own
    assert "amopo_serving_batch_size_bucket" in metrics.text   # the engine's


def test_listens_on_loopback_only(base):
    port = int(base.rsplit(":", 1)[1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))   # no packet is sent; picks the outward interface
            address = probe.getsockname()[0]
        except OSError:
            address = None
    if not address or address.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    with pytest.raises(OSError):
        socket.create_connection((address, port), timeout=3).close()
    socket.create_connection(("127.0.0.1", port), timeout=3).close()


# --- the openai client ----------------------------------------------------------------------------

def test_chat_completion(client):
    r = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=8, temperature=0)
    assert r.id.startswith("chatcmpl-") and r.model == "tiny" and r.object == "chat.completion"
    choice = r.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert 1 <= r.usage.completion_tokens <= 8 or choice.finish_reason == "stop"
    assert r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_stream_matches_the_plain_answer(client):
    plain = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=12, temperature=0)
    chunks = list(client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=12, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2   # token by token
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_completions_batch_and_stream(client):
    prompts = ["one two three", "the cat and the dog"]
    plain = client.completions.create(model="tiny", prompt=prompts, max_tokens=6, temperature=0)
    assert [c.index for c in plain.choices] == [0, 1]
    alone = client.completions.create(model="tiny", prompt=prompts[1], max_tokens=6, temperature=0)
    assert alone.choices[0].text == plain.choices[1].text     # batch-mates do not change the text
    streamed = {0: "", 1: ""}
    usage = None
    for chunk in client.completions.create(model="tiny", prompt=prompts, max_tokens=6, temperature=0, stream=True,
                                           stream_options={"include_usage": True}):
        for c in chunk.choices:
            streamed[c.index] += c.text
        usage = chunk.usage or usage
    assert streamed == {0: plain.choices[0].text, 1: plain.choices[1].text}
    assert usage.completion_tokens == plain.usage.completion_tokens


def test_token_id_prompts(client, tiny_tokenizer):
    import openai

    ids = tiny_tokenizer("one two three")["input_ids"]
    by_ids = client.completions.create(model="tiny", prompt=ids, max_tokens=5, temperature=0)
    by_text = client.completions.create(model="tiny", prompt="one two three", max_tokens=5, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text
    with pytest.raises(openai.BadRequestError, match="outside the vocabulary"):
        client.completions.create(model="tiny", prompt=[10**6], max_tokens=5)


def test_stop_sequences_cut_the_text(client):
    full = client.completions.create(model="tiny", prompt="the model answer", max_tokens=24, temperature=0)
    text = full.choices[0].text
    spots = [i for i in range(2, len(text) - 1) if "\ufffd" not in text[i:i + 2] and text.find(text[i:i + 2]) == i]
    if not spots:
        pytest.skip(f"the tiny model's text {text!r} has no usable stop string")
    stop = text[spots[0]:spots[0] + 2]
    cut = client.completions.create(model="tiny", prompt="the model answer", max_tokens=24, temperature=0, stop=[stop])
    assert cut.choices[0].text == text[:spots[0]]
    assert cut.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny", prompt="the model answer", max_tokens=24, temperature=0, stop=stop, stream=True) if c.choices)
    assert streamed == text[:spots[0]]


def test_seeded_sampling_is_reproducible(client):
    def sample(seed):
        return client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=12, temperature=1.0,
                                              seed=seed).choices[0].message.content
    assert sample(7) == sample(7)


def test_models_list(client):
    assert [m.id for m in client.models.list()] == ["tiny"]


ROUTES = [   # (method, path, JSON body): every route that runs or describes the model
    ("GET", "/openai/v1/models", None),
    ("POST", "/openai/v1/chat/completions", {"model": "tiny", "messages": CHAT, "max_tokens": 2}),
    ("POST", "/openai/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 2}),
    ("POST", "/v1/models/tiny:predict", {"instances": ["hello"], "parameters": {"max_tokens": 2}}),
    ("POST", "/v2/models/tiny/infer", {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                                   "data": ["hello"]}], "parameters": {"max_tokens": 2}}),
    ("GET", "/v2/models/tiny", None),
    ("GET", "/v1/models", None),
    ("GET", "/v2/models", None),
]


@pytest.mark.parametrize("method, path, body", ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_every_model_route_needs_the_token(base, method, path, body):
    send = lambda headers: httpx.request(method, f"{base}{path}", json=body, headers=headers, timeout=60)  # noqa: E731
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {KEY}"},
                    {"authorization": "Bearer"}):
        r = send(headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"]["type"] == "authentication_error"
        assert r.headers["www-authenticate"] == "Bearer"
    assert send(AUTH).status_code == 200


@pytest.mark.parametrize("path", ["/", "/v2/health/live", "/v2/health/ready", "/v1/models/tiny",
                                  "/v2/models/tiny/ready", "/metrics"])
def test_probes_and_metrics_stay_open(base, path):
    assert httpx.get(f"{base}{path}").status_code == 200


def test_the_openai_client_with_a_wrong_key_is_refused(base):
    import openai

    wrong = openai.OpenAI(base_url=f"{base}/openai/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="tiny", messages=CHAT, max_tokens=2)


def test_tokens_are_compared_in_constant_time():
    import inspect

    from amopo.serving import auth

    assert auth.token_matches(f"Bearer {KEY}", KEY) and auth.token_matches(f"bearer  {KEY} ", KEY)
    assert not auth.token_matches(f"Bearer {KEY}x", KEY) and not auth.token_matches(KEY, KEY)
    assert "hmac.compare_digest" in inspect.getsource(auth.token_matches)


# --- KServe's v1 and v2 protocols -----------------------------------------------------------------

def test_v2_client_and_v1_agree(base):
    import amopo.serving.kserve_compat  # noqa: F401  (imports kserve without it reading pytest's argv)
    from kserve.inference_client import InferenceRESTClient, RESTConfig
    from kserve.protocol.infer_type import InferInput, InferRequest

    texts = ["hello the", "the cat and the dog"]

    async def infer():
        async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=60)) as rest:
            request = InferRequest(model_name="tiny", request_id="r-1", parameters={"max_tokens": 5},
                                   infer_inputs=[InferInput("text", [2], "BYTES", data=texts)])
            return await rest.infer(base, request, model_name="tiny", headers=AUTH)

    response = asyncio.run(infer())
    assert response.model_name == "tiny" and response.id == "r-1"
    v2 = [t.decode() if isinstance(t, bytes) else t for t in response.outputs[0].as_numpy().tolist()]
    v1 = httpx.post(f"{base}/v1/models/tiny:predict", timeout=60, headers=AUTH,
                    json={"instances": texts, "parameters": {"max_tokens": 5}}).json()["predictions"]
    assert len(v2) == 2 and v2 == v1


@pytest.mark.parametrize("body, content_type, message", [
    ({"instances": "hello"}, "application/json", "instances"),
    ({"instances": [1]}, "application/json", "must be a string"),
    ({"instances": []}, "application/json", "is empty"),
    ({"instances": ["x"], "parameters": {"max_tokens": MAX_TOKENS + 1}}, "application/json", "above this server"),
    ({"instances": ["x"], "parameters": {"beam_width": 4}}, "application/json", "unsupported parameter"),
    (b"just text", "text/plain", "application/json"),
])
def test_v1_bad_requests(base, body, content_type, message):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(f"{base}/v1/models/tiny:predict", content=content, headers={**AUTH, "content-type": content_type})
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


# --- requests a polite client would never send ----------------------------------------------------

def _chat(**extra):
    return json.dumps({"model": "tiny", "messages": CHAT, **extra}).encode()


BAD_REQUESTS = [
    ("chat", b"{not json", 400, "not valid JSON"),
    ("chat", b"[1, 2]", 400, "must be a JSON object"),
    ("chat", b"\xff\xfe", 400, "not UTF-8"),
    ("chat", json.dumps({"messages": CHAT}).encode(), 400, "'model' is required"),
    ("chat", _chat(model="gpt-9"), 404, "'gpt-9' is not served here"),
    ("chat", _chat(messages=[]), 400, "'messages' is empty"),
    ("chat", _chat(messages="hi"), 400, "must be a list"),
    ("chat", _chat(messages=[{"role": "wizard", "content": "x"}]), 400, "role 'wizard' is not supported"),
    ("chat", _chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
     400, "only text parts"),
    ("chat", _chat(max_tokens="many"), 400, "invalid 'max_tokens'"),
    ("chat", _chat(temperature="hot"), 400, "invalid 'temperature'"),
    ("chat", _chat(temperature=3), 400, "not between 0 and 2"),
    ("chat", _chat(stream="yes"), 400, "invalid 'stream'"),
    ("chat", _chat(stop=[1]), 400, "invalid 'stop'"),
    ("chat", _chat(messages=[{"role": "user", "content": "word " * (2 * MAX_PROMPT)}]), 400,
     f"above this server's limit of {MAX_PROMPT}"),
    ("chat", _chat(max_tokens=MAX_TOKENS + 1), 400, f"above this server's limit of {MAX_TOKENS}"),
    ("chat", _chat(max_tokens=0), 400, "at least 1"),
    ("chat", _chat(tools=[{"type": "function", "function": {"name": "f"}}]), 400, "unsupported parameter 'tools'"),
    ("chat", _chat(n=2), 400, "unsupported parameter 'n'"),
    ("chat", _chat(logprobs=True, stream=True), 400, "'logprobs' cannot be combined with stream=true"),
    ("chat", _chat(response_format={"type": "json_object"}), 400, "unsupported parameter 'response_format'"),
    ("completions", json.dumps({"model": "tiny"}).encode(), 400, "'prompt' is required"),
    ("completions", json.dumps({"model": "tiny", "prompt": []}).encode(), 400, "'prompt' is required"),
    ("completions", json.dumps({"model": "tiny", "prompt": ""}).encode(), 400, "prompt is empty"),
    ("completions", json.dumps({"model": "tiny", "prompt": "x", "best_of": 2}).encode(), 400,
     "unsupported parameter 'best_of'"),
    ("chat", _chat(padding="x" * (MAX_BODY + 10)), 413, f"above the limit of {MAX_BODY} bytes"),
]


@pytest.mark.parametrize("route, body, status, message", BAD_REQUESTS,
                         ids=[f"{i}-{m[:28]}" for i, (_, _, _, m) in enumerate(BAD_REQUESTS)])
def test_bad_requests_get_a_clear_4xx(base, route, body, status, message):
    path = "chat/completions" if route == "chat" else "completions"
    r = httpx.post(f"{base}/openai/v1/{path}", content=body,
                   headers={**AUTH, "content-type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]


def test_chunked_body_over_the_limit(base):
    def chunks():
        for _ in range(MAX_BODY // 1024 + 8):
            yield b" " * 1024

    r = httpx.post(f"{base}/openai/v1/chat/completions", content=chunks(), headers=AUTH, timeout=30)
    assert r.status_code == 413


# --- lm-eval against the endpoint -----------------------------------------------------------------

TASK = """\
task: amopo_serve_smoke
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n\\n"]
  max_gen_toks: 8
  do_sample: false
  temperature: 0.0
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


@pytest.mark.slow
def test_lm_eval_local_chat_completions(base, tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "smoke.jsonl").write_text("".join(json.dumps({"question": f"what is {i} plus {i}?", "answer": str(2 * i)})
                                               + "\n" for i in range(1, 5)))
    (tasks / "smoke.yaml").write_text(TASK.format(data=tasks / "smoke.jsonl"))
    before = metric(base, 'amopo_serving_openai_requests_total{route="chat",status="200"}')
    out = tmp_path / "out"
    cmd = [str(VENV_BIN / "lm_eval"), "run", "--model", "local-chat-completions",
           "--model_args", f"model=tiny,base_url={base}/openai/v1/chat/completions,num_concurrent=2,max_retries=1",
           "--tasks", "amopo_serve_smoke", "--include_path", str(tasks), "--apply_chat_template",
           "--output_path", str(out), "--log_samples"]
    env = {**os.environ, "OPENAI_API_KEY": KEY, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(tmp_path / "hf-datasets")}
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    assert 0.0 <= results["results"]["amopo_serve_smoke"]["exact_match,none"] <= 1.0
    samples = [json.loads(line) for line in next(out.rglob("samples_amopo_serve_smoke_*.jsonl")).read_text().splitlines()]
    assert len(samples) == 4 and all(isinstance(s["resps"][0][0], str) for s in samples)
    assert metric(base, 'amopo_serving_openai_requests_total{route="chat",status="200"}') - before == 4


# --- load -----------------------------------------------------------------------------------------

def _served_requests(base: str) -> float:
    return sum(metric(base, f'amopo_serving_openai_requests_total{{route="{route}",status="200"}}')
               for route in ("chat", "completions"))


@pytest.mark.slow
def test_200_requests_at_concurrency_8(base, client):
    steps_before = metric(base, "amopo_serving_batch_size_count")
    rows_before = metric(base, "amopo_serving_batch_size_sum")
    served_before = _served_requests(base)

    def one(i: int) -> str:
        if i % 4 == 3:
            return client.completions.create(model="tiny", prompt=f"number {i}", max_tokens=6).choices[0].text
        if i % 4 == 2:
            return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": f"question {i}"}], max_tokens=6, stream=True)
                if c.choices)
        return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": f"question {i}"}],
                                              max_tokens=6).choices[0].message.content

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(200)))
    assert len(results) == 200 and all(isinstance(r, str) for r in results)
    assert _served_requests(base) - served_before == 200
    rows_per_step = (metric(base, "amopo_serving_batch_size_sum") - rows_before) / \
        (metric(base, "amopo_serving_batch_size_count") - steps_before)
    assert rows_per_step > 2, f"{rows_per_step:.2f} requests per decoding step: concurrent requests were not batched"


def test_server_is_still_up_after_everything(served, client):
    server, _ = served
    assert server.proc.poll() is None
    assert client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=2).choices
    assert "generation failed" not in server.tail(500_000)
