"""The kserve.Model behind KServe's v1 and v2 routes: text in, text out.

    v1  POST /v1/models/NAME:predict   {"instances": ["text", ...], "parameters": {...}}
                                       → {"predictions": ["completion", ...]}
    v2  POST /v2/models/NAME/infer     one BYTES input (any name, shape [N]) and optional
                                       request "parameters" → BYTES output "text", shape [N]

The texts are raw prompts (no chat template; use the OpenAI chat route for chat). Parameters:
max_tokens, temperature (default 0: greedy), top_p, stop, seed, and ``dimension_targets``: an
object (v1), or a JSON string of one (v1 and v2; v2 parameter values are scalars), steering every text
of the request as the completions route does (``amopo.serving.steering``). The targets applied come
back as top-level ``dimension_targets`` (v1) or the response parameter ``dimension_targets``, a JSON
string (v2); without targets neither is there. All instances of a request, and concurrent requests,
share the engine's batches. Bad input raises kserve's InvalidInput (400).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from amopo.serving.engine import Sampling, TextEngine
from amopo.serving.errors import RequestError
from amopo.serving.kserve_compat import InferOutput, InferRequest, InferResponse, InvalidInput, Model
from amopo.serving.openai_params import parse_sampling
from amopo.serving.steering import PARAM as TARGETS, parse_targets, steer_prompts

MAX_INSTANCES = 64


class TextGenerationModel(Model):
    def __init__(self, name: str, engine: TextEngine):
        super().__init__(name)
        self.engine = engine
        self.ready = True

    def load(self) -> bool:  # the engine is loaded before the server starts
        self.ready = True
        return True

    def get_input_types(self) -> list[dict]:
        return [{"name": "text", "datatype": "BYTES", "shape": [-1]}]

    def get_output_types(self) -> list[dict]:
        return [{"name": "text", "datatype": "BYTES", "shape": [-1]}]

    async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None):
        try:
            if isinstance(payload, InferRequest):
                texts, params = _v2_texts(payload), payload.parameters or {}
            elif isinstance(payload, dict):
                texts, params = _v1_texts(payload), payload.get("parameters") or {}
            else:
                raise RequestError("send JSON with 'content-type: application/json'")
            sampling, targets = _parameters(params)
            texts, applied = steer_prompts(self.engine.spec, texts, targets)
            requests = [self.engine.request(self.engine.encode_text(t), sampling, param="instances") for t in texts]
        except RequestError as exc:
            raise InvalidInput(exc.message) from None
        results = await asyncio.gather(*(self.engine.complete(r) for r in requests))
        outputs = [text for text, _ in results]
        if isinstance(payload, InferRequest):
            return InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=self.name,
                                 infer_outputs=[InferOutput("text", shape=[len(outputs)], datatype="BYTES",
                                                            data=outputs)],
                                 parameters={TARGETS: json.dumps(applied)} if applied else None)
        return {"predictions": outputs, **({TARGETS: applied} if applied else {})}


def _parameters(params: Any) -> tuple[Sampling, dict | None]:
    """Generation settings and dimension targets of a request's ``parameters``."""
    if not isinstance(params, dict):
        raise RequestError(f"parameters must be an object, got {type(params).__name__}")
    params = dict(params)
    targets = parse_targets(params.pop(TARGETS, None), json_string=True)
    return parse_sampling(params), targets


def _check_texts(texts: list, where: str) -> list[str]:
    if not texts:
        raise RequestError(f"{where} is empty")
    if len(texts) > MAX_INSTANCES:
        raise RequestError(f"{where} has {len(texts)} items; at most {MAX_INSTANCES} per request")
    out = []
    for i, text in enumerate(texts):
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise RequestError(f"{where}[{i}] is not UTF-8 text") from None
        if not isinstance(text, str):
            raise RequestError(f"{where}[{i}] must be a string, got {type(text).__name__}")
        out.append(text)
    return out


def _v1_texts(payload: dict) -> list[str]:
    instances = payload.get("instances")
    if not isinstance(instances, list):
        raise RequestError("expected {\"instances\": [\"text\", ...]}")
    return _check_texts(instances, "instances")


def _v2_texts(request: InferRequest) -> list[str]:
    inputs = [i for i in request.inputs if i.datatype == "BYTES"]
    if len(inputs) != 1:
        raise RequestError(f"expected exactly one BYTES input with the texts, got "
                           f"{[(i.name, i.datatype) for i in request.inputs]}")
    return _check_texts(inputs[0].as_numpy().reshape(-1).tolist(), f"input '{inputs[0].name}'")
