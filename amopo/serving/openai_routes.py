"""OpenAI-compatible routes on KServe's FastAPI app (KServe's own OpenAI module needs vllm).

    GET  /openai/v1/models
    POST /openai/v1/chat/completions     stream=true answers with server-sent events
    POST /openai/v1/completions          prompt: string, list of strings, token ids, lists of ids

Log-probabilities (``amopo.serving.logprobs``): completions take ``logprobs`` = N and ``echo`` (the
prompt, and with logprobs its scored tokens, before the completion; ``max_tokens: 0`` scores the
prompt only): what lm-eval's ``local-completions`` sends for multiple-choice tasks. Chat takes
``logprobs: true`` and ``top_logprobs`` = N for the generated tokens. Not with ``stream``.

Responses are the ``openai`` package's types (ChatCompletion, ChatCompletionChunk, Completion,
Model, ErrorObject) serialised as JSON, so any OpenAI client reads them. A request with
``dimension_targets`` (``amopo.serving.steering``) gets a top-level ``dimension_targets`` with the
targets applied in the response, or in the first chunk of a stream; without targets the field is
absent and everything is as for any request. Errors are
``{"error": {message, type, param, code}}`` with a 4xx status; the server stays up. With an API key
configured, every route here requires ``Authorization: Bearer <key>`` (:mod:`amopo.serving.auth`).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import AsyncIterator, Sequence

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from amopo.serving import openai_params
from amopo.serving.engine import TextEngine
from amopo.serving.errors import RequestError
from amopo.serving.generation import Delta, GenerationRequest
from amopo.serving.logprobs import TokenTexts, chat_logprobs, completion_logprobs
from amopo.serving.metrics import REQUESTS
from amopo.serving.steering import steer_chat, steer_prompts

PREFIX = "/openai/v1"


def _finish(reason: str | None) -> str | None:
    # "cancelled" only reaches clients that are gone; report it as a plain stop.
    return "stop" if reason == "cancelled" else reason


def _steered(applied: dict | None) -> dict:
    """The extension field of a steered response (none for a request without targets)."""
    return {"dimension_targets": applied} if applied else {}


def error_response(exc: RequestError) -> JSONResponse:
    from openai.types.shared import ErrorObject

    error = ErrorObject(message=exc.message, type=exc.type, param=exc.param, code=exc.code)
    return JSONResponse({"error": error.model_dump(include={"message", "type", "param", "code"})},
                        status_code=exc.status)


async def _merge(streams: Sequence[AsyncIterator[Delta]]) -> AsyncIterator[tuple[int, Delta]]:
    """Interleave the delta streams of several requests as (index, delta) in arrival order."""
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(i: int, stream: AsyncIterator[Delta]) -> None:
        try:
            async for delta in stream:
                await queue.put((i, delta))
        except Exception as exc:
            await queue.put((i, exc))
        finally:
            await queue.put((i, done))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    remaining = len(tasks)
    try:
        while remaining:
            i, item = await queue.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield i, item
    finally:
        for task in tasks:
            task.cancel()


async def _sse(events: AsyncIterator) -> AsyncIterator[bytes]:
    """Server-sent events: one ``data:`` line per openai model, then ``data: [DONE]``."""
    try:
        async for event in events:
            yield b"data: " + event.to_json(indent=None).encode() + b"\n\n"
    except Exception as exc:  # headers are sent already: report in-band, as OpenAI does
        payload = {"error": {"message": str(exc), "type": "server_error", "param": None, "code": None}}
        yield b"data: " + json.dumps(payload).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


def register_openai_routes(app: FastAPI, engine: TextEngine, model_name: str, *, owned_by: str = "amopo") -> None:
    """Add the OpenAI routes for ``model_name`` to ``app``."""
    from openai.types import Completion, CompletionChoice, CompletionUsage, Model
    from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
    from openai.types.chat.chat_completion import Choice
    from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
    from openai.types.chat.chat_completion_chunk import ChoiceDelta

    openai_params.warm()
    texts = TokenTexts(engine.tokenizer)
    created_at = int(time.time())
    router = APIRouter(prefix=PREFIX, tags=["OpenAI"])

    def check_model(name: str) -> None:
        if name != model_name:
            raise RequestError(f"model '{name}' is not served here; available: '{model_name}'", status=404,
                               param="model", code="model_not_found")

    def usage(requests: Sequence[GenerationRequest], tokens: int) -> CompletionUsage:
        prompt = sum(len(r.prompt_ids) for r in requests)
        return CompletionUsage(prompt_tokens=prompt, completion_tokens=tokens, total_tokens=prompt + tokens)

    async def answer(route: str, request: Request, handler):
        try:
            response = await handler()
        except RequestError as exc:
            REQUESTS.labels(route, str(exc.status)).inc()
            return error_response(exc)
        REQUESTS.labels(route, "200").inc()
        return response

    @router.get("/models")
    async def list_models(request: Request):
        async def handler():
            card = Model(id=model_name, created=created_at, object="model", owned_by=owned_by)
            return JSONResponse({"object": "list", "data": [card.to_dict()]})
        return await answer("models", request, handler)

    @router.post("/chat/completions")
    async def chat_completions(request: Request):
        async def handler():
            params = openai_params.parse_chat(openai_params.parse_json(await request.body()))
            check_model(params.model)
            messages, applied = steer_chat(engine.spec, params.messages, params.dimension_targets)
            gen = engine.request(engine.encode_chat(messages), params.sampling, param="messages",
                                 max_tokens_param=params.max_tokens_param, logprobs=params.logprobs)
            rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
            if params.stream:
                return StreamingResponse(_sse(chat_chunks(rid, created, gen, params.include_usage, applied)),
                                         media_type="text/event-stream")
            text, last = await engine.complete(gen)
            return JSONResponse(ChatCompletion(
                id=rid, object="chat.completion", created=created, model=model_name,
                choices=[Choice(index=0, finish_reason=_finish(last.finish_reason),
                                message=ChatCompletionMessage(role="assistant", content=text),
                                logprobs=chat_logprobs(texts, last.logprobs) if last.logprobs is not None else None)],
                usage=usage([gen], last.completion_tokens), **_steered(applied)).to_dict())
        return await answer("chat", request, handler)

    async def chat_chunks(rid: str, created: int, gen: GenerationRequest, include_usage: bool,
                          applied: dict | None):
        def chunk(delta: ChoiceDelta, finish: str | None = None, **extra) -> ChatCompletionChunk:
            return ChatCompletionChunk(id=rid, object="chat.completion.chunk", created=created, model=model_name,
                                       choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish)], **extra)

        yield chunk(ChoiceDelta(role="assistant", content=""), **_steered(applied))
        async for delta in engine.stream(gen):
            if delta.text:
                yield chunk(ChoiceDelta(content=delta.text))
            if delta.finish_reason is not None:
                yield chunk(ChoiceDelta(), _finish(delta.finish_reason))
                if include_usage:
                    yield ChatCompletionChunk(id=rid, object="chat.completion.chunk", created=created,
                                              model=model_name, choices=[],
                                              usage=usage([gen], delta.completion_tokens))

    @router.post("/completions")
    async def completions(request: Request):
        async def handler():
            params = openai_params.parse_completion(openai_params.parse_json(await request.body()))
            check_model(params.model)
            prompts, applied = steer_prompts(engine.spec, params.prompts, params.dimension_targets)
            gens = [engine.request(engine.check_token_ids(p, "prompt") if isinstance(p, list)
                                   else engine.encode_text(p), params.sampling, param="prompt",
                                   logprobs=params.logprobs, allow_zero=params.echo,
                                   prompt_logprobs=params.logprobs if params.echo else None)
                    for p in prompts]
            # The prompt as text: what echo returns, and where the completion's text offsets start.
            shown = [p if isinstance(p, str) else engine.tokenizer.decode(p, skip_special_tokens=True)
                     for p in prompts]
            rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
            if params.stream:
                echoed = shown if params.echo else None
                return StreamingResponse(_sse(completion_chunks(rid, created, gens, params.include_usage, applied,
                                                                echoed)), media_type="text/event-stream")
            results = await asyncio.gather(*(engine.complete(g) for g in gens))
            choices = []
            for i, ((text, last), gen) in enumerate(zip(results, gens)):
                logprobs = None
                if params.logprobs is not None:
                    logprobs = completion_logprobs(texts, last.prompt_logprobs, last.logprobs or [], gen.prompt_ids,
                                                   len(shown[i]))
                choices.append(CompletionChoice(index=i, text=(shown[i] if params.echo else "") + text,
                                                finish_reason=_finish(last.finish_reason), logprobs=logprobs))
            return JSONResponse(Completion(
                id=rid, object="text_completion", created=created, model=model_name, choices=choices,
                usage=usage(gens, sum(last.completion_tokens for _, last in results)), **_steered(applied)).to_dict())
        return await answer("completions", request, handler)

    async def completion_chunks(rid: str, created: int, gens: list[GenerationRequest], include_usage: bool,
                                applied: dict | None, echoed: list[str] | None):
        tokens, extra = 0, _steered(applied)
        for i, text in enumerate(echoed or []):   # echo: each prompt's text comes first
            choice = CompletionChoice.model_construct(index=i, text=text, logprobs=None, finish_reason=None)
            yield Completion.model_construct(id=rid, object="text_completion", created=created, model=model_name,
                                             choices=[choice], **extra)
            extra = {}
        async for i, delta in _merge([engine.stream(g) for g in gens]):
            tokens += delta.completion_tokens if delta.finish_reason is not None else 0
            # Stream chunks carry finish_reason null, which the response type does not allow: construct.
            choice = CompletionChoice.model_construct(index=i, text=delta.text, logprobs=None,
                                                      finish_reason=_finish(delta.finish_reason))
            yield Completion.model_construct(id=rid, object="text_completion", created=created, model=model_name,
                                             choices=[choice], **extra)
            extra = {}   # the applied targets ride on the first chunk only
        if include_usage:
            yield Completion.model_construct(id=rid, object="text_completion", created=created, model=model_name,
                                             choices=[], usage=usage(gens, tokens))

    app.include_router(router)
