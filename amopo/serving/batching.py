"""Dynamic batching: requests that arrive together are generated together.

One generation thread owns a ``Decoder``. When it is idle, the first request to arrive waits up to
``max_wait_s`` for company, and everything that arrived by then is prefilled as one group. While a
batch is running, newly arrived requests join it at the next step boundary (continuous batching)
up to ``max_batch_size`` rows, so a request never waits for a whole batch to finish. Each request
receives its deltas on its own asyncio queue as soon as they are decoded, so streaming and
non-streaming clients share batches.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from typing import AsyncIterator

from amopo.serving.generation import Decoder, Delta, GenerationRequest
from amopo.serving.metrics import BATCH_SIZE, GENERATED_TOKENS, PROMPT_TOKENS, QUEUE_WAIT

log = logging.getLogger(__name__)


class Batcher:
    """Feeds concurrent requests into one ``Decoder`` running on a dedicated thread."""

    def __init__(self, decoder: Decoder, *, max_batch_size: int, max_wait_s: float):
        self.decoder = decoder
        self.max_batch_size = max(1, max_batch_size)
        self.max_wait_s = max(0.0, max_wait_s)
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="amopo-generate", daemon=True)
                self._thread.start()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Deltas of ``request`` until (and including) the one with a finish_reason.

        Leaving the iteration early (client gone) cancels the request inside its batch.
        """
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue = asyncio.Queue()

        def sink(item) -> None:   # called on the generation thread
            loop.call_soon_threadsafe(deltas.put_nowait, item)

        self._ensure_thread()
        self._inbox.put((request, sink, time.monotonic()))
        try:
            while True:
                item = await deltas.get()
                if isinstance(item, Exception):
                    raise RuntimeError(f"generation failed: {type(item).__name__}: {item}") from item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            request.cancelled = True

    async def run(self, request: GenerationRequest) -> tuple[str, Delta]:
        """The whole text of ``request`` and its last delta (finish_reason, token count)."""
        parts: list[str] = []
        async for delta in self.stream(request):
            parts.append(delta.text)
        return "".join(parts), delta

    # --- the generation thread -----------------------------------------------------------------

    def _take(self, room: int, wait: bool) -> list[tuple]:
        """Up to ``room`` waiting requests; when ``wait``, block for the first and linger max_wait_s."""
        items = []
        if wait:
            items.append(self._inbox.get())
            deadline = time.monotonic() + self.max_wait_s
            while len(items) < room and time.monotonic() < deadline:
                try:
                    items.append(self._inbox.get_nowait())
                except queue.Empty:
                    time.sleep(0.0005)
        while len(items) < room:
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        return [item for item in items if not item[0].cancelled]

    def _run(self) -> None:
        decoder = self.decoder
        while True:
            room = self.max_batch_size - decoder.size if decoder.can_join else 0
            items = self._take(room, wait=decoder.size == 0) if room else []
            try:
                if items:
                    now = time.monotonic()
                    for _, _, queued_at in items:
                        QUEUE_WAIT.observe(now - queued_at)
                    PROMPT_TOKENS.inc(sum(len(req.prompt_ids) for req, _, _ in items))
                    decoder.admit([(req, _counting(sink)) for req, sink, _ in items])
                if decoder.size:
                    BATCH_SIZE.observe(decoder.size)
                    decoder.step()
            except Exception as exc:  # answer every waiter; keep serving
                log.exception("generation failed with %d running and %d new requests", decoder.size, len(items))
                for req, sink, _ in items:
                    if not any(row.request is req for row in decoder.rows):
                        sink(exc)
                decoder.fail(exc)


def _counting(sink):
    def counted(item) -> None:
        if isinstance(item, Delta) and item.finish_reason is not None:
            GENERATED_TOKENS.inc(item.completion_tokens)
        sink(item)
    return counted
