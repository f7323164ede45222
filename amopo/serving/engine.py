"""The text engine behind every route: model, tokenizer, limits, prompt encoding and the batcher.

Loads safetensors only, with ``trust_remote_code`` off (``amopo.models.load_model``). Chat prompts
go through the tokenizer's chat template with the assistant turn opened; a tokenizer without a
template gets plain "role: content" lines. ``spec`` is the model's conditioning spec
(``amopo_conditioning.json`` in its folder), None for a model trained without dimension
conditioning; the routes steer prompts with it (``amopo.serving.steering``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator, Sequence

from amopo.serving.batching import Batcher
from amopo.serving.errors import RequestError, ServingError
from amopo.serving.generation import Decoder, Delta, GenerationRequest
from amopo.serving.limits import Limits


@dataclass(frozen=True)
class Sampling:
    """Per-request generation settings, validated by the route that parsed them."""
    max_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


class TextEngine:
    def __init__(self, model, tokenizer, *, limits: Limits, max_batch_size: int, max_batch_wait_s: float,
                 spec: dict | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.limits = limits
        self.spec = spec
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos.add(tokenizer.eos_token_id)
        self.eos_ids = eos
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(eos), 0)
        self.vocab_size = len(tokenizer)
        decoder = Decoder(model, tokenizer, eos_ids=self.eos_ids, pad_id=self.pad_id)
        self.batcher = Batcher(decoder, max_batch_size=max_batch_size, max_wait_s=max_batch_wait_s)

    @classmethod
    def load(cls, model_dir: str, *, limits: Limits, max_batch_size: int, max_batch_wait_s: float,
             device: str = "auto") -> "TextEngine":
        import torch

        from amopo.errors import ModelError, SteeringError
        from amopo.models import load_model, load_tokenizer
        from amopo.steering import load_spec

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            tokenizer = load_tokenizer(model_dir)
            spec = load_spec(model_dir)   # before the weights: a bad spec fails fast
            model = load_model(model_dir, dtype=torch.bfloat16 if device.startswith("cuda") else torch.float32)
        except (ModelError, SteeringError) as exc:
            raise ServingError(str(exc)) from None
        model = model.to(device).eval()
        context = getattr(model.config, "max_position_embeddings", None)
        limits = Limits(limits.max_prompt_tokens, limits.max_tokens, limits.default_max_tokens, context)
        return cls(model, tokenizer, limits=limits, max_batch_size=max_batch_size, max_batch_wait_s=max_batch_wait_s,
                   spec=spec)

    # --- prompts -------------------------------------------------------------------------------

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of ``messages`` ({"role", "content"} with text content) with the assistant turn open."""
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=True)["input_ids"]

    def check_token_ids(self, ids: Sequence[int], param: str) -> list[int]:
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise RequestError(f"{param}: token id {bad[0]} is outside the vocabulary (0..{self.vocab_size - 1})",
                               param=param)
        return list(ids)

    def request(self, prompt_ids: list[int], sampling: Sampling, *, param: str,
                max_tokens_param: str = "max_tokens", logprobs: int | None = None,
                prompt_logprobs: int | None = None, allow_zero: bool = False) -> GenerationRequest:
        """A generation request within the limits; RequestError (4xx) when it is not.

        ``logprobs`` / ``prompt_logprobs``: the top-N of the generated / prompt tokens' entries
        (None: not computed); ``allow_zero``: max_tokens 0 scores the prompt only.
        """
        self.limits.check_prompt(len(prompt_ids), param)
        budget = self.limits.completion_budget(sampling.max_tokens, len(prompt_ids), max_tokens_param,
                                               allow_zero=allow_zero)
        return GenerationRequest(prompt_ids, budget, sampling.temperature, sampling.top_p, sampling.stop,
                                 sampling.seed, logprobs=logprobs, prompt_logprobs=prompt_logprobs)

    # --- generation ----------------------------------------------------------------------------

    def stream(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        return self.batcher.stream(request)

    async def complete(self, request: GenerationRequest) -> tuple[str, Delta]:
        return await self.batcher.run(request)
