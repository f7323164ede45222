"""Does the served model steer as the trained checkpoint does? Greedy answers at each steered
dimension's low and high level, requested from the endpoint through ``chat_template_kwargs`` (the
form every engine takes: vLLM, SGLang and KServe's Hugging Face runtime hand it to the model's chat
template, `amopo serve` applies it itself) and rendered from the checkpoint folder with
transformers' ``apply_chat_template(..., dimension_targets=...)``.

For each dimension the model was trained to steer (its conditioning spec's ``steer_trained``) and
each level, over ``prompts``: the mean completion tokens on both sides and the share of prompts
whose two answers are the same text. Both sides render the same prompt token for token
(:mod:`amopo.chat_template`), so on the same numerics the answers are equal; a server in bf16 on a
GPU may still flip a near-tie, so the figures are reported, not gated. An endpoint that rejects
``chat_template_kwargs`` (an HTTP error) fails: it does not steer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from amopo.serving.smoke import STEER_PROMPTS, SmokeTestError, _chat
from amopo.steering import load_spec


def steered_dimensions(folder: str | Path) -> list[dict]:
    """The scored dimensions (as in the spec) that the model in ``folder`` was trained to steer; []
    for a model without a conditioning spec or trained to steer nothing."""
    spec = load_spec(folder)
    if not spec:
        return []
    trained = spec.get("steer_trained") or []
    return [d for d in spec["dimensions"] if d["name"] in trained and d.get("low") is not None]


def load_checkpoint(folder: str | Path):
    """(tokenizer, model in eval mode) of the model folder, loaded once for every level asked."""
    from amopo.models import load_model, load_tokenizer

    model = load_model(str(folder))
    model.eval()
    return load_tokenizer(str(folder)), model


def checkpoint_answers(checkpoint, prompts: Sequence[str], targets: dict, max_tokens: int) -> list[dict]:
    """Greedy answers of the checkpoint (:func:`load_checkpoint`), each prompt rendered by its own
    chat template with ``dimension_targets=targets``: [{"text", "completion_tokens"}]."""
    import torch

    tokenizer, model = checkpoint
    out = []
    for prompt in prompts:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            dimension_targets=targets, tokenize=True, return_dict=False,
                                            return_tensors="pt")
        with torch.no_grad():
            generated = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                       do_sample=False, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        new = generated[0, ids.shape[1]:].tolist()
        if tokenizer.eos_token_id in new:
            new = new[: new.index(tokenizer.eos_token_id)]
        out.append({"text": tokenizer.decode(new, skip_special_tokens=True),
                    "completion_tokens": len(new)})
    return out


def endpoint_answers(url: str, model_name: str, prompts: Sequence[str], targets: dict, max_tokens: int, *,
                     api_key_env: str | None = None, timeout_s: float = 120.0) -> list[dict]:
    """Greedy answers of the endpoint at ``url`` (its ``/openai/v1/chat/completions``), each request
    steered by ``chat_template_kwargs: {"dimension_targets": targets}``."""
    out = []
    for prompt in prompts:
        body = {"model": model_name, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                "temperature": 0.0, "chat_template_kwargs": {"dimension_targets": targets}}
        answer, _ = _chat(url, body, api_key_env=api_key_env, timeout_s=timeout_s, attempts=3)
        choice = (answer.get("choices") or [{}])[0]
        out.append({"text": (choice.get("message") or {}).get("content") or "",
                    "completion_tokens": (answer.get("usage") or {}).get("completion_tokens") or 0})
    return out


def compare_steering(url: str, model_name: str, folder: str | Path, *, prompts: Sequence[str] = STEER_PROMPTS,
                     max_tokens: int = 48, api_key_env: str | None = None) -> dict | None:
    """The module docstring's comparison; None when the model was trained to steer nothing.

    Returns {"dimensions": {name: {level: {"endpoint_tokens", "checkpoint_tokens", "same_answers"}}},
    "prompts", "max_tokens"}. Raises SmokeTestError when the endpoint refuses a steered request."""
    dims = steered_dimensions(folder)
    if not dims:
        return None
    result: dict = {"dimensions": {}, "prompts": len(prompts), "max_tokens": max_tokens}
    checkpoint = load_checkpoint(folder)
    for dim in dims:
        per_level = {}
        for level in (dim["low"], dim["high"]):
            targets = {dim["name"]: level}
            try:
                served = endpoint_answers(url, model_name, prompts, targets, max_tokens, api_key_env=api_key_env)
            except SmokeTestError as exc:
                raise SmokeTestError(f"endpoint steering: a request with chat_template_kwargs "
                                     f"{{'dimension_targets': {targets}}} failed, so the endpoint does not steer "
                                     f"through the model's chat template: {exc}") from None
            local = checkpoint_answers(checkpoint, prompts, targets, max_tokens)
            per_level[level] = {
                "endpoint_tokens": sum(a["completion_tokens"] for a in served) / len(prompts),
                "checkpoint_tokens": sum(a["completion_tokens"] for a in local) / len(prompts),
                "same_answers": sum(a["text"].strip() == b["text"].strip() for a, b in zip(served, local)) / len(prompts)}
        result["dimensions"][dim["name"]] = per_level
    return result
