"""Batched autoregressive decoding with per-request settings, reported token by token.

A ``Decoder`` holds the running batch: its rows (one per request), their KV cache, attention mask
and last logits. ``admit`` prefills new requests as a group (prompts left-padded) and joins them to
the running batch at a step boundary (continuous batching); ``step`` picks one token for every row,
reports the new text and decodes one position. A request ends on an end-of-sequence token or one
of its stop strings ("stop"; the stop string is cut from the text), at its own token budget
("length"), or when the caller cancels it ("cancelled"); finished rows leave the batch and the KV
cache at once, and cache columns that no remaining row attends to are dropped.

Greedy decoding when ``temperature`` is 0; otherwise sampling with temperature and nucleus (top-p),
each request drawing from its own generator (seeded by ``seed`` when given), so a request's text
does not depend on what else shares its batch.

Log-probabilities (``amopo.serving.logprobs``): a request with ``logprobs`` = N gets every token it
generated, with its log-probability and the N most likely tokens at its position, on its final
delta; with ``prompt_logprobs`` = N its prompt is scored too, by a forward pass over the prompt
alone when it is admitted. A request with ``max_new_tokens`` 0 is scored only: it finishes at
admission ("length") and never joins the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from amopo.serving.logprobs import TokenLogprob, position_logprobs, score_prompt


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None          # N: every generated token's log-probability and top N
    prompt_logprobs: int | None = None   # N: the prompt's too (a forward over it at admission)
    cancelled: bool = field(default=False, compare=False)   # set by the caller, read by the decoder


@dataclass
class Delta:
    """New text of one request since its previous delta; ``finish_reason`` is set on the last one,
    which also carries the log-probabilities the request asked for."""
    text: str
    finish_reason: str | None
    completion_tokens: int
    logprobs: list[TokenLogprob] | None = None          # generated tokens (end token included)
    prompt_logprobs: list[TokenLogprob] | None = None   # prompt tokens, the first with logprob None


# Receives a request's deltas, or an exception if decoding failed (then nothing follows).
Sink = Callable[["Delta | Exception"], None]


class _Text:
    """The decoded text of one request, released only once it can no longer change or hit a stop."""

    def __init__(self, tokenizer, stop: Sequence[str]):
        self.tokenizer, self.stop = tokenizer, [s for s in stop if s]
        self.ids: list[int] = []
        self.sent = 0          # characters already released
        self.hold = max((len(s) for s in self.stop), default=1) - 1

    def add(self, token_id: int) -> tuple[str, bool]:
        """Append a token; return (newly releasable text, whether a stop string was hit)."""
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cut = min((i for i in (text.find(s, max(0, self.sent - self.hold)) for s in self.stop) if i >= 0),
                  default=-1)
        if cut >= 0:
            return self._release(text[:cut], cut), True
        # A trailing U+FFFD is an incomplete UTF-8 sequence; hold it (and a possible stop prefix) back.
        return self._release(text, len(text.rstrip("\ufffd")) - self.hold), False

    def flush(self) -> str:
        return self._release(self.tokenizer.decode(self.ids, skip_special_tokens=True), None)

    def _release(self, text: str, upto: int | None) -> str:
        upto = len(text) if upto is None else upto
        if upto <= self.sent:
            return ""
        out, self.sent = text[self.sent:upto], upto
        return out


@dataclass
class _Row:
    request: GenerationRequest
    sink: Sink
    text: _Text
    generator: torch.Generator | None
    tokens: int = 0
    logprobs: list[TokenLogprob] | None = None
    prompt_logprobs: list[TokenLogprob] | None = None

    def final(self, text: str, reason: str) -> Delta:
        return Delta(text, reason, self.tokens, self.logprobs, self.prompt_logprobs)


def _generator(seed: int | None, device) -> torch.Generator:
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed % (2**63))
    return gen


def _next_tokens(logits: torch.Tensor, rows: Sequence[_Row]) -> list[int]:
    chosen = logits.argmax(dim=-1).tolist()
    for i, row in enumerate(rows):
        req = row.request
        if req.temperature <= 0:
            continue
        probs = torch.softmax(logits[i].float() / req.temperature, dim=-1)
        if req.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            # Keep the smallest set whose mass reaches top_p (always at least the top token).
            sorted_probs[sorted_probs.cumsum(-1) - sorted_probs >= req.top_p] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        chosen[i] = int(torch.multinomial(probs, 1, generator=row.generator).item())
    return chosen


def _left_pad(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class Decoder:
    """The running batch of one model (used from one thread at a time)."""

    def __init__(self, model, tokenizer, *, eos_ids: set[int], pad_id: int):
        self.model, self.tokenizer = model, tokenizer
        self.eos_ids, self.pad_id = set(eos_ids), pad_id
        self.rows: list[_Row] = []
        self.cache = None
        self.mask: torch.Tensor | None = None     # [rows, cache length], 1 where a row attends
        self.logits: torch.Tensor | None = None   # [rows, vocab], the next-token logits of each row

    @property
    def size(self) -> int:
        return len(self.rows)

    @property
    def can_join(self) -> bool:
        """Whether new requests can join a running batch (plain per-layer caches only)."""
        from transformers.cache_utils import DynamicLayer

        return self.cache is None or all(type(layer) is DynamicLayer for layer in self.cache.layers)

    @torch.inference_mode()
    def admit(self, items: Sequence[tuple[GenerationRequest, Sink]]) -> None:
        """Score the prompts that ask for it, answer the score-only requests, prefill the others
        together and add them to the running batch."""
        scored = [score_prompt(self.model, req.prompt_ids, req.prompt_logprobs)
                  if req.prompt_logprobs is not None else None for req, _ in items]
        running = []
        for (req, sink), prompt in zip(items, scored):
            if req.max_new_tokens <= 0:
                sink(Delta("", "length", 0, [] if req.logprobs is not None else None, prompt))
            else:
                running.append((req, sink, prompt))
        if not running:
            return
        items = [(req, sink) for req, sink, _ in running]
        device = self.model.device
        width = max(len(req.prompt_ids) for req, _ in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for i, (req, _) in enumerate(items):
            ids[i, width - len(req.prompt_ids):] = torch.tensor(req.prompt_ids, dtype=torch.long)
            mask[i, width - len(req.prompt_ids):] = 1
        ids, mask = ids.to(device), mask.to(device)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                         use_cache=True, logits_to_keep=1)
        rows = [_Row(req, sink, _Text(self.tokenizer, req.stop),
                     _generator(req.seed, device) if req.temperature > 0 else None,
                     logprobs=[] if req.logprobs is not None else None, prompt_logprobs=prompt)
                for req, sink, prompt in running]
        if not self.rows:
            self.cache, self.mask, self.logits = out.past_key_values, mask, out.logits[:, -1, :]
        else:
            self._join(out.past_key_values, mask, out.logits[:, -1, :])
        self.rows.extend(rows)

    def _join(self, cache, mask: torch.Tensor, logits: torch.Tensor) -> None:
        from transformers import DynamicCache

        width = max(self.mask.shape[1], mask.shape[1])
        data = [(torch.cat([_left_pad(a.keys, width, 2), _left_pad(b.keys, width, 2)]),
                 torch.cat([_left_pad(a.values, width, 2), _left_pad(b.values, width, 2)]))
                for a, b in zip(self.cache.layers, cache.layers)]
        self.cache = DynamicCache(ddp_cache_data=data, config=self.model.config)
        self.mask = torch.cat([_left_pad(self.mask, width, 1), _left_pad(mask, width, 1)])
        self.logits = torch.cat([self.logits, logits])

    @torch.inference_mode()
    def step(self) -> None:
        """Pick and report one token for every row, drop finished rows, decode one position."""
        if not self.rows:
            return
        tokens = _next_tokens(self.logits, self.rows)
        self._record_logprobs(tokens)
        keep = [i for i, (row, token) in enumerate(zip(self.rows, tokens)) if self._advance(row, token)]
        if not keep:
            self.reset()
            return
        device = self.model.device
        if len(keep) < len(self.rows):
            index = torch.tensor(keep, dtype=torch.long, device=device)
            self.cache.batch_select_indices(index)
            self.mask = self.mask.index_select(0, index)
            self.rows = [self.rows[i] for i in keep]
            self._trim()
        next_ids = torch.tensor([tokens[i] for i in keep], dtype=torch.long, device=device)[:, None]
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(keep), 1))], dim=1)
        out = self.model(input_ids=next_ids, attention_mask=self.mask, position_ids=self.mask.sum(-1, keepdim=True) - 1,
                         past_key_values=self.cache, use_cache=True)
        self.cache, self.logits = out.past_key_values, out.logits[:, -1, :]

    def _record_logprobs(self, tokens: list[int]) -> None:
        """Append each chosen token's entry to the rows that asked for log-probabilities."""
        wanted = [i for i, row in enumerate(self.rows) if row.logprobs is not None]
        if not wanted:
            return
        index = torch.tensor(wanted, dtype=torch.long, device=self.logits.device)
        entries = position_logprobs(self.logits.index_select(0, index), [tokens[i] for i in wanted],
                                    [self.rows[i].request.logprobs for i in wanted])
        for i, entry in zip(wanted, entries):
            self.rows[i].logprobs.append(entry)

    def _advance(self, row: _Row, token: int) -> bool:
        """Report ``token`` of ``row``; False when the row is finished."""
        if row.request.cancelled:
            row.sink(row.final(row.text.flush(), "cancelled"))
            return False
        if token in self.eos_ids:
            row.sink(row.final(row.text.flush(), "stop"))
            return False
        row.tokens += 1
        piece, stopped = row.text.add(token)
        if stopped:
            row.sink(row.final(piece, "stop"))
            return False
        if row.tokens >= row.request.max_new_tokens:
            row.sink(row.final(piece + row.text.flush(), "length"))
            return False
        if piece:
            row.sink(Delta(piece, None, row.tokens))
        return True

    def _trim(self) -> None:
        # Columns that every remaining row masks out (padding of rows that left) cost attention only.
        start = int((self.mask.sum(0) > 0).nonzero()[0])
        if start > 0 and self.can_join:
            from transformers import DynamicCache

            data = [(layer.keys[:, :, start:], layer.values[:, :, start:]) for layer in self.cache.layers]
            self.cache = DynamicCache(ddp_cache_data=data, config=self.model.config)
            self.mask = self.mask[:, start:]

    def fail(self, exc: Exception) -> None:
        """Report ``exc`` to every running request and empty the batch."""
        for row in self.rows:
            row.sink(exc)
        self.reset()

    def reset(self) -> None:
        self.rows, self.cache, self.mask, self.logits = [], None, None, None


def generate(model, tokenizer, requests: Sequence[GenerationRequest], emit: Callable[[int, Delta], None], *,
             eos_ids: set[int], pad_id: int) -> None:
    """Run ``requests`` as one batch to completion on this thread, calling ``emit(i, delta)``."""
    decoder = Decoder(model, tokenizer, eos_ids=eos_ids, pad_id=pad_id)
    decoder.admit([(req, lambda d, i=i: emit(i, d)) for i, req in enumerate(requests)])
    while decoder.size:
        decoder.step()
