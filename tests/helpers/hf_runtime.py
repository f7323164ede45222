"""A stand-in for KServe's Hugging Face runtime (the ``huggingfaceserver`` of an InferenceService with
``modelFormat: huggingface``), its OpenAI chat route only, on its Hugging Face (transformers) backend.

Why a stand-in: the runtime is not installable here. Its package is not on PyPI (neither
``kserve-huggingfaceserver`` nor ``huggingfaceserver`` is in the package lists; it ships in KServe's
image, with vLLM and CUDA, gigabytes), and its default backend, vLLM, needs a GPU. What it does
for a chat request, this does the same way (``huggingfaceserver/generative_model.py``):

- ``POST /openai/v1/chat/completions``: the messages (text content; text parts joined by newlines, as
  the runtime joins them) are rendered with the model folder's own chat template,
  ``tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
  **chat_template_kwargs)``, and the prompt is tokenised as the runtime's completion path tokenises it
  (``tokenizer(prompt)``); the model generates greedily (``max_tokens`` new tokens at most; sampling
  parameters are ignored) and the answer is in the OpenAI schema, ``usage.prompt_tokens`` the prompt's
  token count. The model is served under ``--model_name`` (the runtime uses the InferenceService's
  name); another ``model`` gets a 404.
- A template that stops rendering (``raise_exception`` → ``jinja2.TemplateError``) gets HTTP 400
  ``{"error": {"message": ..., "type": "BadRequestError", "param": null, "code": 400}}`` with the
  template's message, the answer of vLLM, the runtime's backend on GPUs (vLLM appends the
  exception's cause, `` None``, to the message; this gives the message alone). A body that is not a
  chat request also gets a 400.
- ``GET /v2/health/ready`` and ``GET /v1/models/NAME`` answer 200 once the model is loaded.

Not offered: streaming, ``n`` > 1, tools, logprobs, the v1/v2 inference protocols.

    python tests/helpers/hf_runtime.py --model_dir DIR --model_name NAME --http_port PORT [--host H]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class BadRequest(Exception):
    """A request the runtime answers with 400."""


def _text(content) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "\n".join(p["text"] for p in content)
    raise BadRequest("only text content is supported")


class Runtime:
    def __init__(self, model_dir: str, model_name: str):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(1)
        self.name = model_name
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.lock = threading.Lock()

    def chat(self, body) -> dict:
        import jinja2
        import torch

        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            raise BadRequest("messages: a non-empty list is required")
        kwargs = body.get("chat_template_kwargs") or {}
        if not isinstance(kwargs, dict):
            raise BadRequest("chat_template_kwargs must be an object")
        messages = []
        for m in body["messages"]:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise BadRequest("each message needs a role")
            messages.append({"role": m["role"], "content": _text(m.get("content"))})
        try:
            prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                                        **kwargs)
        except jinja2.TemplateError as exc:
            raise BadRequest(str(exc)) from None
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 16
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise BadRequest("max_tokens must be a positive integer")
        inputs = self.tokenizer(prompt, return_tensors="pt")
        n_prompt = inputs["input_ids"].shape[-1]
        with self.lock, torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
        new = out[0, n_prompt:].tolist()
        eos = self.tokenizer.eos_token_id
        finish = "stop" if eos is not None and eos in new else "length"
        if eos is not None and eos in new:
            new = new[:new.index(eos) + 1]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": self.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish, "logprobs": None}],
                "usage": {"prompt_tokens": n_prompt, "completion_tokens": len(new),
                          "total_tokens": n_prompt + len(new)}}


def _handler(runtime: Runtime):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):   # noqa: D401 (quiet)
            pass

        def _json(self, status: int, obj: dict) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, kind: str, message: str) -> None:
            self._json(status, {"error": {"message": message, "type": kind, "param": None, "code": status}})

        def do_GET(self):
            if self.path == "/v2/health/ready":
                return self._json(200, {"ready": True})
            if self.path == f"/v1/models/{runtime.name}":
                return self._json(200, {"name": runtime.name, "ready": True})
            self._error(404, "NotFoundError", f"no route {self.path}")

        def do_POST(self):
            if self.path != "/openai/v1/chat/completions":
                return self._error(404, "NotFoundError", f"no route {self.path}")
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"null")
            except json.JSONDecodeError as exc:
                return self._error(400, "BadRequestError", f"not JSON: {exc}")
            if isinstance(body, dict) and body.get("model") != runtime.name:
                return self._error(404, "NotFoundError", f"The model `{body.get('model')}` does not exist.")
            try:
                reply = runtime.chat(body)
            except BadRequest as exc:
                return self._error(400, "BadRequestError", str(exc))
            self._json(200, reply)

    return Handler


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model_dir", required=True)
    ap.add_argument("--model_name", required=True)
    ap.add_argument("--http_port", type=int, default=8080)
    ap.add_argument("--host", default="127.0.0.1")
    args = ap.parse_args(argv)
    runtime = Runtime(args.model_dir, args.model_name)
    server = ThreadingHTTPServer((args.host, args.http_port), _handler(runtime))
    print(f"serving {args.model_name} from {args.model_dir} on {args.host}:{args.http_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
