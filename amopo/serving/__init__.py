"""`amopo serve`: a KServe ModelServer for a causal LM, with OpenAI-compatible routes.

    server.py         ServeConfig and serve(): resolve the model, build the app, bind 127.0.0.1
    kserve_model.py   the kserve.Model: v1 ``:predict`` and v2 ``/infer``, text in, text out
    openai_routes.py  /openai/v1/chat/completions, /openai/v1/completions, /openai/v1/models (+ SSE)
    openai_params.py  request validation with the ``openai`` package's request types
    steering.py       dimension_targets: read, applied to the prompt, reported (client side: amopo/steering.py)
    engine.py         model + tokenizer + limits; prompt encoding; the batcher
    batching.py       the generation thread: dynamic and continuous batching
    generation.py     the running batch: prefill, join, one decoding step, stop strings, sampling
    limits.py         prompt, max_tokens and body-size limits
    kserve_compat.py  importing kserve safely; binding a host other than 0.0.0.0
    metrics.py        Prometheus metrics of the engine (next to KServe's on /metrics)
    errors.py         ServingError (cannot start) and RequestError (a client's 4xx)
"""

from amopo.serving.errors import RequestError, ServingError

__all__ = ["RequestError", "ServingError"]
