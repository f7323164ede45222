"""Prometheus metrics of the generation engine, exposed with KServe's own on ``/metrics``."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

BATCH_SIZE = Histogram("amopo_serving_batch_size", "Requests decoded together, observed at every decoding step",
                       buckets=(1, 2, 4, 8, 16, 32, 64))
QUEUE_WAIT = Histogram("amopo_serving_queue_wait_seconds", "Time a request waited for its batch to start")
PROMPT_TOKENS = Counter("amopo_serving_prompt_tokens", "Prompt tokens processed")
GENERATED_TOKENS = Counter("amopo_serving_generated_tokens", "Completion tokens generated")
REQUESTS = Counter("amopo_serving_openai_requests", "OpenAI-compatible requests by route and status code",
                   ["route", "status"])
