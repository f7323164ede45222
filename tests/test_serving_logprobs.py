"""Log-probabilities on `amopo serve` (a subprocess serving the tiny model): every value checked
against a plain forward pass of the model in this process, the OpenAI shapes, the refusals, and
lm-eval's own `local-completions` client scoring a multiple-choice task through the endpoint
exactly as lm-eval's `hf` model scores it on the folder. Last, the post-deploy check
(`compare_endpoint_to_folder`) on the right model and on a wrong one."""

from __future__ import annotations

import json

import httpx
import pytest
import torch

from helpers.processes import start_amopo_server

MAX_PROMPT, MAX_TOKENS = 128, 32
ATOL = 1e-4
CHAT = [{"role": "user", "content": "what is the answer to the question"}]


@pytest.fixture(scope="module")
def base(tiny_model_dir, tmp_path_factory):
    server, url = start_amopo_server(tiny_model_dir, tmp_path_factory.mktemp("serve-logprobs"), "--model-name", "tiny",
                                     "--max-prompt-tokens", str(MAX_PROMPT), "--max-tokens-limit", str(MAX_TOKENS),
                                     "--max-batch-size", "8", "--torch-threads", "1",
                                     "--device", "cpu")   # fp32, as the reference forward here
    yield url
    server.stop()


@pytest.fixture(scope="module")
def ref(tiny_model_dir):
    """(tokenizer, logp): ``logp(ids)`` is the fp32 log_softmax of a forward over ``ids`` [L, vocab];
    row t is the distribution of token t + 1."""
    from amopo.models import load_model, load_tokenizer

    tok, model = load_tokenizer(str(tiny_model_dir)), load_model(str(tiny_model_dir)).eval()

    def logp(ids):
        with torch.no_grad():
            return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)

    return tok, logp


@pytest.fixture(scope="module")
def names(ref):
    from amopo.serving.logprobs import TokenTexts

    return TokenTexts(ref[0])


def post(base: str, route: str, **body) -> httpx.Response:
    return httpx.post(f"{base}/openai/v1/{route}", json={"model": "tiny", **body}, timeout=60)


def completion(base: str, **body) -> dict:
    r = post(base, "completions", **body)
    assert r.status_code == 200, r.text
    return r.json()


# --- /completions: echo, logprobs, max_tokens 0 ---------------------------------------------------

@pytest.mark.parametrize("as_ids", [False, True], ids=["text", "token-ids"])
def test_echo_with_max_tokens_0_scores_the_prompt_exactly(base, ref, as_ids):
    tok, logp = ref
    texts = ["the cat and the dog", "one two three four five six", "water"]
    ids = [tok(t)["input_ids"] for t in texts]
    answer = completion(base, prompt=ids if as_ids else texts, echo=True, logprobs=1, max_tokens=0, temperature=0)
    assert [c["index"] for c in answer["choices"]] == [0, 1, 2]
    assert answer["usage"] == {"prompt_tokens": sum(map(len, ids)), "completion_tokens": 0,
                               "total_tokens": sum(map(len, ids))}
    for choice, text, prompt in zip(answer["choices"], texts, ids):
        lp = choice["logprobs"]
        assert choice["text"] == text and choice["finish_reason"] == "length"
        assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(prompt)
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None    # no context, as OpenAI
        want = logp(prompt)[torch.arange(len(prompt) - 1), torch.tensor(prompt[1:], dtype=torch.long)]
        assert torch.allclose(torch.tensor(lp["token_logprobs"][1:], dtype=torch.float), want, atol=ATOL)
        assert "".join(lp["tokens"]) == text
        assert lp["text_offset"] == [len("".join(lp["tokens"][:i])) for i in range(len(prompt))]


def test_top_logprobs_are_the_true_top_n(base, ref, names):
    tok, logp = ref
    prompt = tok("the model answer to the question is")["input_ids"]
    lp = completion(base, prompt=prompt, echo=True, logprobs=5, max_tokens=0)["choices"][0]["logprobs"]
    values, index = logp(prompt)[:-1].topk(5, dim=-1)
    for t, top in enumerate(lp["top_logprobs"][1:]):
        assert set(top) == {names.name(i)[0] for i in index[t].tolist()}
        assert torch.allclose(torch.tensor(sorted(top.values(), reverse=True)), values[t], atol=ATOL)
        for i, v in zip(index[t].tolist(), values[t].tolist()):
            assert abs(top[names.name(i)[0]] - v) <= ATOL


def _greedy(logp, ids: list[int], n: int, eos: int) -> list[int]:
    out = list(ids)
    for _ in range(n):
        out.append(int(logp(out)[-1].argmax()))
        if out[-1] == eos:
            break
    return out[len(ids):]


def test_echo_then_generation_lists_every_token(base, ref, names):
    tok, logp = ref
    text = "one two three"
    prompt = tok(text)["input_ids"]
    choice = completion(base, prompt=text, echo=True, logprobs=2, max_tokens=6, temperature=0)["choices"][0]
    new = _greedy(logp, prompt, 6, tok.eos_token_id)
    lp = choice["logprobs"]
    assert lp["tokens"] == [names.name(i)[0] for i in prompt + new]
    full = prompt + new
    want = logp(full)[torch.arange(len(full) - 1), torch.tensor(full[1:], dtype=torch.long)]
    assert torch.allclose(torch.tensor(lp["token_logprobs"][1:]), want, atol=ATOL)
    for value, top in zip(lp["token_logprobs"][len(prompt):], lp["top_logprobs"][len(prompt):]):
        assert value == max(top.values())      # greedy: what lm-eval's is_greedy reads
    assert choice["text"] == text + tok.decode(new, skip_special_tokens=True)
    assert lp["text_offset"][len(prompt)] == len(text)


def test_one_new_token_with_echo_is_what_lm_eval_sends(base, ref):
    tok, _ = ref
    prompts = [tok(t)["input_ids"] for t in ("the sun and the moon", "cat")]
    answer = completion(base, prompt=prompts, echo=True, logprobs=1, max_tokens=1, temperature=0, seed=1234)
    for choice, prompt in zip(answer["choices"], prompts):
        assert len(choice["logprobs"]["token_logprobs"]) == len(prompt) + 1   # lm-eval drops the last one


def test_logprobs_without_echo_cover_the_completion_only(base, ref, names):
    tok, logp = ref
    text = "the cat and"
    prompt = tok(text)["input_ids"]
    choice = completion(base, prompt=text, logprobs=0, max_tokens=4, temperature=0)["choices"][0]
    new = _greedy(logp, prompt, 4, tok.eos_token_id)
    lp = choice["logprobs"]
    assert lp["tokens"] == [names.name(i)[0] for i in new] and all(t == {} for t in lp["top_logprobs"])
    assert lp["text_offset"][0] == len(text)     # offsets count prompt + completion, as OpenAI
    assert choice["text"] == tok.decode(new, skip_special_tokens=True)


def test_the_openai_client_reads_the_legacy_shape(base, ref):
    import openai

    client = openai.OpenAI(base_url=f"{base}/openai/v1", api_key="none", max_retries=0)
    r = client.completions.create(model="tiny", prompt="the cat and the dog", echo=True, logprobs=3, max_tokens=0)
    lp = r.choices[0].logprobs
    assert lp.token_logprobs[0] is None and len(lp.top_logprobs[1]) == 3 and r.choices[0].text == "the cat and the dog"


def test_echo_streams_the_prompt_first(base):
    with httpx.stream("POST", f"{base}/openai/v1/completions", timeout=60,
                      json={"model": "tiny", "prompt": ["one two", "cat"], "echo": True, "max_tokens": 3,
                            "temperature": 0, "stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    firsts = [e["choices"][0] for e in events[:2]]
    assert [(c["index"], c["text"]) for c in firsts] == [(0, "one two"), (1, "cat")]
    plain = completion(base, prompt=["one two", "cat"], echo=True, max_tokens=3, temperature=0)
    streamed = {0: "", 1: ""}
    for e in events:
        for c in e["choices"]:
            streamed[c["index"]] += c["text"]
    assert streamed == {c["index"]: c["text"] for c in plain["choices"]}


# --- chat ------------------------------------------------------------------------------------------

def test_chat_logprobs_of_greedy_tokens_equal_a_forward(base, ref, names):
    tok, logp = ref
    r = post(base, "chat/completions", messages=CHAT, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    prompt = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    prompt = tok(prompt, add_special_tokens=False)["input_ids"]
    new = _greedy(logp, prompt, 8, tok.eos_token_id)
    content = choice["logprobs"]["content"]
    assert [c["token"] for c in content] == [names.name(i)[0] for i in new]
    assert all(c["bytes"] == list(names.token_bytes(i)) for c, i in zip(content, new))
    full = prompt + new
    want = logp(full)[torch.arange(len(prompt) - 1, len(full) - 1), torch.tensor(new, dtype=torch.long)]
    assert torch.allclose(torch.tensor([c["logprob"] for c in content]), want, atol=ATOL)
    for c, row in zip(content, logp(full)[len(prompt) - 1:-1]):
        values, index = row.topk(3)
        assert [t["token"] for t in c["top_logprobs"]] == [names.name(i)[0] for i in index.tolist()]
        assert torch.allclose(torch.tensor([t["logprob"] for t in c["top_logprobs"]]), values, atol=ATOL)
        assert c["top_logprobs"][0]["logprob"] == c["logprob"]
    if choice["finish_reason"] == "length":
        assert bytes(b for c in content for b in c["bytes"]).decode("utf-8", "replace") == \
            tok.decode(new, skip_special_tokens=True)
    plain = post(base, "chat/completions", messages=CHAT, max_tokens=8, temperature=0).json()["choices"][0]
    assert plain["message"] == choice["message"] and plain["logprobs"] is None


# --- refusals --------------------------------------------------------------------------------------

BAD = [
    ("completions", {"prompt": "x", "logprobs": 21}, "above this server's limit of 20"),
    ("completions", {"prompt": "x", "logprobs": -1}, "expected an integer from 0 to 20"),
    ("completions", {"prompt": "x", "logprobs": True}, "expected an integer from 0 to 20"),
    ("completions", {"prompt": "x", "logprobs": "2"}, "invalid 'logprobs'"),
    ("completions", {"prompt": "x", "echo": "yes"}, "invalid 'echo'"),
    ("completions", {"prompt": "x", "max_tokens": 0}, "needs echo=true"),
    ("completions", {"prompt": "x", "echo": True, "max_tokens": -1}, "at least 0"),
    ("completions", {"prompt": "x", "logprobs": 1, "stream": True}, "cannot be combined with stream=true"),
    ("completions", {"prompt": "x", "top_logprobs": 3}, "unsupported parameter 'top_logprobs'"),
    ("completions", {"prompt": "word " * (2 * MAX_PROMPT), "echo": True, "logprobs": 1, "max_tokens": 0},
     f"above this server's limit of {MAX_PROMPT}"),
    ("chat/completions", {"messages": CHAT, "logprobs": True, "top_logprobs": 21}, "above this server's limit of 20"),
    ("chat/completions", {"messages": CHAT, "top_logprobs": 2}, "'top_logprobs' needs logprobs=true"),
    ("chat/completions", {"messages": CHAT, "logprobs": "yes"}, "invalid 'logprobs'"),
    ("chat/completions", {"messages": CHAT, "logprobs": True, "stream": True}, "cannot be combined with stream=true"),
    ("chat/completions", {"messages": CHAT, "echo": True}, "unsupported parameter 'echo'"),
]


@pytest.mark.parametrize("route, body, message", BAD, ids=[f"{i}-{m[:24]}" for i, (_, _, m) in enumerate(BAD)])
def test_bad_logprob_requests_get_a_400(base, route, body, message):
    r = post(base, route, **body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]["message"]


# --- lm-eval's local-completions against lm-eval's hf ---------------------------------------------

def _lm_eval(model: str, model_args: dict, limit: int) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from amopo.evaluate.lm_eval_tasks import SHIPPED_TASKS_DIR

    return simple_evaluate(model=model, model_args=model_args, tasks=["amopo_facts_mc"], limit=limit,
                           task_manager=TaskManager(include_path=str(SHIPPED_TASKS_DIR), include_defaults=False),
                           batch_size=4, device="cpu" if model == "hf" else None, apply_chat_template=True,
                           log_samples=True, bootstrap_iters=0, random_seed=0, numpy_random_seed=0,
                           torch_random_seed=0, fewshot_random_seed=0)


@pytest.mark.slow
def test_lm_eval_local_completions_scores_like_hf_on_the_folder(base, tiny_model_dir):
    folder = str(tiny_model_dir)
    hf = _lm_eval("hf", {"pretrained": folder, "dtype": "float32"}, limit=10)
    served = _lm_eval("local-completions", {"model": "tiny", "base_url": f"{base}/openai/v1/completions",
                                            "tokenizer": folder, "tokenizer_backend": "huggingface",
                                            "num_concurrent": 1, "max_retries": 1}, limit=10)
    a, b = hf["results"]["amopo_facts_mc"], served["results"]["amopo_facts_mc"]
    assert a["acc,none"] == b["acc,none"] and a["acc_norm,none"] == b["acc_norm,none"]
    docs = {s["doc_id"]: s for s in hf["samples"]["amopo_facts_mc"]}
    assert len(docs) == 10
    for s in served["samples"]["amopo_facts_mc"]:
        mine, theirs = s["filtered_resps"], docs[s["doc_id"]]["filtered_resps"]
        assert [ll for ll, _ in mine] == pytest.approx([ll for ll, _ in theirs], abs=ATOL)
        assert [bool(g) for _, g in mine] == [bool(g) for _, g in theirs]
        pick = lambda resps: max(range(len(resps)), key=lambda i: resps[i][0])  # noqa: E731
        assert pick(mine) == pick(theirs) and s["acc"] == docs[s["doc_id"]]["acc"]


# --- the post-deploy check --------------------------------------------------------------------------

@pytest.mark.slow
def test_compare_endpoint_to_folder_agrees_on_the_served_folder(base, tiny_model_dir):
    from amopo.evaluate.lm_eval_tasks import compare_endpoint_to_folder

    result = compare_endpoint_to_folder(f"{base}/openai/v1", "tiny", str(tiny_model_dir),
                                        ["amopo_facts_mc", "amopo_arithmetic"], 5, 0.0)
    assert result["agree"] and result["tolerance"] == 0.0
    assert result["same_answers"] == {"amopo_facts_mc": 1.0, "amopo_arithmetic": 1.0}
    assert result["metrics"]["lm_eval/amopo_facts_mc/acc"]["difference"] == 0.0
    assert "lm_eval/amopo_arithmetic/exact_match/last_number" in result["metrics"]


@pytest.mark.slow
def test_compare_endpoint_to_folder_catches_another_model(tiny_model_dir, tmp_path):
    from amopo.evaluate.lm_eval_tasks import EndpointMismatchError, compare_endpoint_to_folder
    from amopo.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "other", seed=3)
    server, url = start_amopo_server(other, tmp_path, "--model-name", "other", "--torch-threads", "1",
                                     "--device", "cpu")
    try:
        with pytest.raises(EndpointMismatchError) as caught:
            compare_endpoint_to_folder(f"{url}/openai/v1", "other", str(tiny_model_dir), ["amopo_facts_mc"], 10, 0.05)
    finally:
        server.stop()
    message = str(caught.value)
    assert message.startswith("the served model is not the trained one") and "task amopo_facts_mc" in message
    assert "tolerance 0.05" in message and str(tiny_model_dir) in message
    assert caught.value.result["same_answers"]["amopo_facts_mc"] < 0.95 and "the same answer on" in message
    wrong = [m for m in caught.value.result["metrics"].values() if m["difference"] > 0.05]
    assert wrong and all(f"{m['endpoint']:.4f}" in message and f"{m['folder']:.4f}" in message for m in wrong)
    assert caught.value.result["agree"] is False
