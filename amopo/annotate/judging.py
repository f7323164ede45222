"""Asking a judge for one dimension's scores, through the answer cache, in chunks.

The judges are those of ``amopo.evaluate.judges`` with the rubric prompt of
``amopo.annotate.rubric``: a ``LocalJudge`` gives the expected level under its level-token
probabilities, an ``EndpointJudge`` the number parsed from its reply (both None when unparseable).
``to_level`` turns a value into the stored score: the nearest whole level of the scale, halves
rounded up, clamped to the scale; the raw value stays in the provenance.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from amopo.annotate.cache import Answer, AnswerCache
from amopo.annotate.sources import Target
from amopo.data.dimensions import Dimension
from amopo.evaluate.judge_prompts import PromptSet


def build_judge(cfg, prompts: PromptSet):
    """The judge ``cfg.judge`` names (an endpoint URL or a local model), without its own progress bar."""
    from amopo.evaluate.endpoint import ChatEndpoint, is_endpoint
    from amopo.evaluate.judges import EndpointJudge, LocalJudge

    if not is_endpoint(cfg.judge):
        return LocalJudge(cfg.judge, prompts, top_k=cfg.judge_top_k, batch_size=cfg.judge_batch_size,
                          max_answer_chars=cfg.max_answer_chars, progress=False)
    endpoint = ChatEndpoint(cfg.judge, cfg.judge_model_name, api_key_env=cfg.judge_api_key_env, retries=cfg.retries,
                            timeout=cfg.timeout)
    return EndpointJudge(endpoint, prompts, max_tokens=cfg.judge_max_tokens, concurrency=cfg.concurrency,
                         max_answer_chars=cfg.max_answer_chars, progress=False)


def to_level(value: float, dim: Dimension) -> int:
    """The nearest whole level of ``dim``'s scale to ``value`` (halves up), clamped to the scale."""
    return int(min(dim.high, max(dim.low, math.floor(value + 0.5))))


def ask(judge, questions: Sequence[tuple[str, Target]], dimension: str, cache: AnswerCache, *,
        chunk_size: int, on_chunk: Callable[[int], None] = lambda n: None) -> int:
    """Ask ``judge`` to rate every (key, target) of ``questions``, ``chunk_size`` per call; each
    call's verdicts are in ``cache`` (and on disk) before the next call. Returns how many were asked."""
    for start in range(0, len(questions), chunk_size):
        chunk = questions[start:start + chunk_size]
        verdicts = judge.rate([(t.prompt, t.response, dimension) for _, t in chunk],
                              desc=f"rating {dimension}")
        if len(verdicts) != len(chunk):
            raise RuntimeError(f"judge returned {len(verdicts)} verdicts for {len(chunk)} questions")
        cache.add((key, Answer(v.value, v.raw)) for (key, _), v in zip(chunk, verdicts))
        on_chunk(len(chunk))
    return len(questions)
