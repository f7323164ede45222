"""Serving benchmark: `amopo serve` at concurrency 1, 4 and 16 against plain transformers generation,
one request at a time, in one run.

    .venv/bin/python bench/serve_throughput.py                       # embedded SmolLM2-135M-Instruct
    .venv/bin/python bench/serve_throughput.py --model PATH --max-tokens 64 --concurrency 1 8 32

Peer: ``model.generate(do_sample=False)`` on the same chat prompts, sequentially, in this process.
Server: ``amopo serve`` as a subprocess on 127.0.0.1 (dynamic batching up to --max-batch-size),
driven by the ``openai`` client from closed-loop worker threads (each sends its next request when the
previous one is answered). Both decode greedily, so both produce the same tokens; the script checks
that the first answers agree. Prints tokens/s, p50/p95 latency and the ratios; the target on 2 CPU
cores is throughput at concurrency 16 ≥ 4× concurrency 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPTS = [
    "Give me three tips for writing clear emails.",
    "What is the capital of France, and why is it famous?",
    "Explain what a neural network is in two sentences.",
    "Write a short poem about the sea.",
    "How do I boil an egg?",
    "List four fruits that are red.",
    "Why is the sky blue?",
    "Summarise the plot of Romeo and Juliet.",
    "What does a database index do?",
    "Suggest a name for a friendly robot.",
    "How many legs does a spider have?",
    "Describe a sunset to someone who has never seen one.",
    "What is the difference between weather and climate?",
    "Give an example of a prime number greater than 20.",
    "Translate 'good morning' into Spanish and German.",
    "What should I pack for a weekend hike?",
]


@dataclass
class Result:
    label: str
    requests: int
    tokens: int
    wall_s: float
    latencies: list[float]
    rows_per_step: float | None = None    # mean requests decoded together (server only)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def run_transformers(model_dir: str, prompts: list[str], max_tokens: int) -> tuple[Result, str]:
    """The peer: plain transformers generate, one request at a time."""
    import torch

    from amopo.models import load_model, load_tokenizer

    tok, model = load_tokenizer(model_dir), load_model(model_dir).eval()

    def one(prompt: str) -> tuple[int, str]:
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                       tokenize=False)
        ids = tok(text, add_special_tokens=False, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        new = out[0, ids["input_ids"].shape[1]:]
        eos = tok.eos_token_id
        n = int((new != eos).sum()) if eos is not None else len(new)
        return n, tok.decode(new, skip_special_tokens=True)

    one(prompts[0])   # warm-up
    latencies, tokens, first = [], 0, None
    start = time.perf_counter()
    for prompt in prompts:
        t = time.perf_counter()
        n, text = one(prompt)
        latencies.append(time.perf_counter() - t)
        tokens += n
        first = first if first is not None else text
    result = Result("transformers, 1 at a time", len(prompts), tokens, time.perf_counter() - start, latencies)
    del model
    return result, first


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: str, max_tokens: int, max_batch_size: int, torch_threads: int,
                 log: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "amopo", "serve", "--model", model_dir, "--model-name", "bench", "--port", str(port),
           "--max-batch-size", str(max_batch_size), "--max-tokens-limit", str(max_tokens),
           "--torch-threads", str(torch_threads)]
    env = {k: v for k, v in os.environ.items() if k != "AMOPO_SERVE_API_KEY"}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited ({proc.returncode}); see {log}")
        try:
            if httpx.get(base + "/v2/health/ready", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    sys.exit(f"the server did not become ready; see {log}")


def _scrape(base: str, name: str) -> float:
    import httpx

    lines = httpx.get(base + "/metrics", timeout=30).text.splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith(name + " "))


def run_server(base: str, prompts: list[str], concurrency: int, max_tokens: int) -> tuple[Result, str]:
    import openai

    client = openai.OpenAI(base_url=base + "/openai/v1", api_key="none", max_retries=0, timeout=600)
    rows, steps = _scrape(base, "amopo_serving_batch_size_sum"), _scrape(base, "amopo_serving_batch_size_count")

    def one(prompt: str) -> tuple[float, int, str]:
        t = time.perf_counter()
        r = client.chat.completions.create(model="bench", messages=[{"role": "user", "content": prompt}],
                                           max_tokens=max_tokens, temperature=0)
        return time.perf_counter() - t, r.usage.completion_tokens, r.choices[0].message.content

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        done = list(pool.map(one, prompts))
    wall = time.perf_counter() - start
    rows_per_step = (_scrape(base, "amopo_serving_batch_size_sum") - rows) / max(
        1.0, _scrape(base, "amopo_serving_batch_size_count") - steps)
    result = Result(f"amopo serve, concurrency {concurrency}", len(prompts), sum(n for _, n, _ in done), wall,
                    [lat for lat, _, _ in done], rows_per_step)
    return result, done[0][2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=8,
                        help="requests per level (at least 2 × the concurrency)")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="CPU threads for torch in both the peer and the server (0: torch's default)")
    args = parser.parse_args()
    if args.torch_threads:
        import torch
        torch.set_num_threads(args.torch_threads)

    from amopo.models import resolve_model

    model_dir = resolve_model(args.model)

    def workload(n: int) -> list[str]:
        return [PROMPTS[i % len(PROMPTS)] for i in range(n)]

    import torch

    print(f"model {model_dir}; {args.max_tokens} new tokens per request (greedy); {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}", flush=True)
    peer, peer_first = run_transformers(model_dir, workload(args.requests), args.max_tokens)
    print(f"  done: {peer.label}", flush=True)

    log = Path(tempfile.mkdtemp(prefix="amopo-bench-")) / "server.log"
    proc, base = start_server(model_dir, args.max_tokens, args.max_batch_size, args.torch_threads, log)
    results, first = [], None
    try:
        run_server(base, workload(2), 1, args.max_tokens)   # warm-up
        for c in args.concurrency:
            result, text = run_server(base, workload(max(args.requests, 2 * c)), c, args.max_tokens)
            first = first if first is not None else text
            results.append(result)
            print(f"  done: {result.label}", flush=True)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()

    one = next((r for r in results if r.label.endswith("concurrency 1")), results[0])
    print()
    print(f"{'':32} {'requests':>8} {'tokens':>7} {'tok/s':>8} {'p50 s':>7} {'p95 s':>7} {'batch':>6} "
          f"{'vs c=1':>7} {'vs transformers':>15}")
    for r in [peer, *results]:
        batch = f"{r.rows_per_step:6.1f}" if r.rows_per_step is not None else f"{1:6d}"
        print(f"{r.label:32} {r.requests:8d} {r.tokens:7d} {r.tokens_per_s:8.1f} {r.pct(0.5):7.2f} {r.pct(0.95):7.2f} "
              f"{batch} {r.tokens_per_s / one.tokens_per_s:6.2f}× {r.tokens_per_s / peer.tokens_per_s:14.2f}×")
    print("batch = mean requests decoded together per step")
    print()
    print(f"first answer identical to transformers: {'yes' if first == peer_first else 'no'}")
    top = max(results, key=lambda r: int(r.label.rsplit(' ', 1)[1]))
    ratio = top.tokens_per_s / one.tokens_per_s
    print(f"throughput at {top.label.split(', ')[1]} = {ratio:.2f}× concurrency 1 (target ≥ 4× on 2 CPU cores: "
          f"{'met' if ratio >= 4 else 'not met'})")
    print(f"server log: {log}")


if __name__ == "__main__":
    main()
