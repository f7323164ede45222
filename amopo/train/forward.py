"""Forward passes that stop before the output head, and the checks that say when that is exact.

The model is still called through its outermost wrapper (DDP, PEFT, accelerate), so gradient
synchronisation and adapters behave as usual; only for the duration of the call its output head
is swapped for a pass-through, so ``outputs.logits`` holds the final hidden states and the head is
applied by :func:`amopo.objectives.chunked_logprobs.chunked_token_logprobs` instead.

That is exact only where the model's logits are ``head(h)`` of whatever reaches the head (a scaling
of the head's input, or a linear scaling of its bias-free output, still is). A model that transforms
its logits otherwise (Gemma's final-logit softcap, possibly kept in a nested ``text_config``; a
vocabulary slice) would silently get wrong log-probs, and config fields cannot list every such
model. So :func:`check_head_bypass` compares the two on the model itself, once, and
:func:`output_head` hands out the head only where they agree.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from typing import Iterator, NamedTuple

import torch
from torch import nn

from amopo.errors import ConfigError
from amopo.train.packing import block_attention_mask, flex_block_mask

# Where check_head_bypass keeps its verdict: on the unwrapped model, so copies carry it along.
_VERDICT = "_amopo_head_bypass"
# Tolerance of the check on log-probs: an absolute floor plus this many units of rounding of the
# head's output dtype (eps) times the largest |logit|. In fp32 that is about 1e-3; under bf16
# autocast, where both paths round logits to 8 significant bits, a few percent of the largest
# logit. Transforms worth catching change log-probs by far more (a softcap of 30 moves a logit of
# 30 by 7); linear scalings that the bypass gets right differ by rounding only.
_CHECK_ATOL = 1e-3
_CHECK_EPS = 4
# Tokens of the probe row used when no training row is given (ids 1..16, modulo the vocabulary).
_PROBE_LENGTH = 16
# Attention implementations that take an arbitrary block mask (flex_attention as a BlockMask).
_MASK_ATTENTION = ("sdpa", "eager", "flex_attention")
# Devices where torch's flex_attention runs forward only (it refuses inputs that require grad).
_NO_FLEX_BACKWARD = ("cpu", "mps")


class Head(NamedTuple):
    owner: nn.Module
    name: str
    module: nn.Linear


class _PassThrough(nn.Module):
    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP / FSDP-style wrappers that keep it as ``.module``."""
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return model


def _config(model: nn.Module):
    return getattr(unwrap(model), "config", None)


def is_sharded(weight: torch.Tensor) -> bool:
    """A DTensor shard or a DeepSpeed ZeRO-3 partition rather than the whole weight."""
    try:
        from torch.distributed.tensor import DTensor
        if isinstance(weight, DTensor):
            return True
    except ImportError:  # pragma: no cover - very old torch
        pass
    return weight.numel() == 0 or hasattr(weight, "ds_id")  # DeepSpeed ZeRO-3 partitions


def _linear_head(model: nn.Module) -> Head | None:
    """The output head where it is a whole (unsharded) ``nn.Linear``; else None."""
    inner = unwrap(model)
    if any(type(m).__name__.startswith("FullyShardedDataParallel") for m in inner.modules()):
        return None
    getter = getattr(inner, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    if type(head) is not nn.Linear or is_sharded(head.weight):
        return None
    for name, module in inner.named_modules():
        if module is head:
            owner_name, _, attr = name.rpartition(".")
            return Head(inner.get_submodule(owner_name) if owner_name else inner, attr, head)
    return None


class BypassCheck(NamedTuple):
    """The verdict of :func:`check_head_bypass`; ``reason`` says why the bypass is not used."""
    ok: bool
    max_diff: float
    tolerance: float
    reason: str | None = None


def output_head(model: nn.Module) -> Head | None:
    """The linear output head where computing log-probs from it and the final hidden states gives
    the model's own log-probs (:func:`check_head_bypass`, run on first use); else None."""
    head = _linear_head(model)
    if head is None:
        return None
    verdict = getattr(unwrap(model), _VERDICT, None) or check_head_bypass(model)
    return head if verdict.ok else None


def bypass_fallback_reason(model: nn.Module, input_ids: torch.Tensor | None = None,
                           labels: torch.Tensor | None = None) -> str | None:
    """Why :func:`output_head` gives no head for ``model`` (None where it gives one); with a row
    (``input_ids``, ``labels``) the bypass is checked on it now, else the recorded verdict is used."""
    if _linear_head(model) is None:
        return "the output head is sharded or not a plain linear layer"
    verdict = getattr(unwrap(model), _VERDICT, None) if input_ids is None else None
    return (verdict or check_head_bypass(model, input_ids, labels)).reason


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Within the block every submodule is in eval mode (no dropout); each gets its own mode back."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _probe(head: Head) -> tuple[torch.Tensor, torch.Tensor]:
    ids = (torch.arange(1, _PROBE_LENGTH + 1) % head.module.out_features).view(1, -1)
    return ids, ids.clone()


def check_head_bypass(model: nn.Module, input_ids: torch.Tensor | None = None,
                      labels: torch.Tensor | None = None) -> BypassCheck:
    """Compare, on one row, the log-probs of its labelled tokens through the head bypass with
    ``log_softmax(model(...).logits)``; record the verdict on the model for :func:`output_head`.

        ok  ⇔  max_t |logp_bypass(t) − logp_model(t)| ≤ atol + 4 · eps(head dtype) · max_t |finite logits(t)|

    ``input_ids`` [1, T] and ``labels`` [1, T] (IGNORE_INDEX = −100 off the response) are one
    training sequence; without them a short probe row of every next token is used. Runs without
    gradients, in eval mode, on the unwrapped model (no DDP hooks). A bypass that fails outright
    (a transform that changes the shape) counts as a difference.
    """
    from amopo.objectives.chunked_logprobs import chunked_token_logprobs

    head = _linear_head(model)
    if head is None:
        raise ValueError("check_head_bypass: the model's output head is sharded or not a plain linear layer")
    inner = unwrap(model)
    if input_ids is None:
        input_ids, labels = _probe(head)
    device = head.module.weight.device
    input_ids = input_ids.to(device)
    labels = (input_ids if labels is None else labels).to(device)
    rows, cols = (labels[:, 1:] != -100).nonzero(as_tuple=True)
    if rows.numel() == 0:
        raise ValueError("check_head_bypass: the row has no labelled token after its first")
    targets = labels[:, 1:][rows, cols]
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "use_cache": False}
    dtypes = []
    with torch.no_grad(), _eval_mode(inner):
        hook = head.module.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
        try:
            logits = inner(**inputs).logits.float()
        finally:
            hook.remove()
        own = torch.log_softmax(logits[rows, cols], dim=-1).gather(-1, targets[:, None]).squeeze(-1)
        try:
            with head_bypassed(head) as linear:
                hidden = inner(**inputs).logits
            bypass = chunked_token_logprobs(hidden[rows, cols], linear.weight, targets, linear.bias)
            max_diff = (bypass - own).abs().max().item()
        except (RuntimeError, ValueError, IndexError):
            max_diff = math.inf
    eps = torch.finfo(dtypes[0] if dtypes and dtypes[0].is_floating_point else torch.float32).eps
    compared = logits[rows, cols]
    scale = compared[compared.isfinite()].abs().max().item() if compared.isfinite().any() else 0.0
    tolerance = _CHECK_ATOL + _CHECK_EPS * eps * scale
    ok = max_diff <= tolerance   # False for NaN too
    reason = None if ok else (f"log-probs through the head bypass differ from the model's own logits by up to "
                              f"{max_diff:.3g} > {tolerance:.3g}: the model transforms its logits after the head")
    verdict = BypassCheck(ok, max_diff, tolerance, reason)
    setattr(inner, _VERDICT, verdict)
    return verdict


@contextmanager
def head_bypassed(head: Head) -> Iterator[nn.Linear]:
    """Within the block, calling the model returns final hidden states in place of logits."""
    setattr(head.owner, head.name, _PassThrough())
    try:
        yield head.module
    finally:
        setattr(head.owner, head.name, head.module)


def _attention(model: nn.Module) -> str | None:
    return getattr(_config(model), "_attn_implementation", None)


def supports_block_mask(model: nn.Module) -> bool:
    """Whether the model's attention accepts a custom block mask (needed by shared-prompt packing)."""
    return _attention(model) in _MASK_ATTENTION


def attention_mask_for(model: nn.Module, segment_group: torch.Tensor, segment_kind: torch.Tensor,
                       dtype: torch.dtype):
    """The block attention mask of a packed batch as the model's attention takes it: a ``BlockMask``
    for flex_attention, an additive ``dtype`` mask (0 or the lowest value) for eager, else the
    boolean [R, 1, L, L] mask (see :mod:`amopo.train.packing`)."""
    attention = _attention(model)
    if attention == "flex_attention":
        return flex_block_mask(segment_group, segment_kind)
    mask = block_attention_mask(segment_group, segment_kind)
    if attention == "eager":
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)
    return mask


def check_attention_device(attention: str, device) -> None:
    """Raise ConfigError where ``attention`` cannot train on ``device``: torch's flex_attention has
    no backward pass on CPU or MPS (it raises NotImplementedError for inputs that require grad)."""
    kind = torch.device(device).type
    if attention == "flex_attention" and kind in _NO_FLEX_BACKWARD:
        raise ConfigError(f"attention 'flex_attention' cannot train on {kind}: torch {torch.__version__}'s "
                          f"flex_attention has no backward pass there; use sdpa or eager")


def compile_decoder_layers(model: nn.Module) -> int:
    """``torch.compile`` each transformer block in place (once); returns how many were compiled.

    Compiling blocks rather than the whole model keeps parameter names, wrappers and the head swap
    untouched, and every block shares one compiled graph.
    """
    inner = unwrap(model)
    if getattr(inner, "_amopo_compiled", False):
        return 0
    count = 0
    for module in inner.modules():
        if type(module).__name__.endswith("DecoderLayer"):
            module.compile(dynamic=True)
            count += 1
    inner._amopo_compiled = True
    return count


# transformers' switch for handing grouped k/v heads to SDPA as they are (read at every attention call)
_FORCE_GQA = "TRANSFORMERS_SDPA_FORCE_GQA"


@contextmanager
def grouped_kv_on_cpu(device) -> Iterator[None]:
    """Within the block, on CPU, SDPA gets the model's grouped key/value heads as they are
    (``enable_gqa``) instead of copies repeated to every query head, which its backward would keep.

    Exact: torch's CPU flash-attention kernel takes grouped heads with any mask. transformers only
    does this without a mask, for the sake of CUDA kernels that would fall back to the math path, so
    it stays off on other devices.
    """
    if torch.device(device).type != "cpu" or os.environ.get(_FORCE_GQA) is not None:
        yield
        return
    os.environ[_FORCE_GQA] = "1"
    try:
        yield
    finally:
        os.environ.pop(_FORCE_GQA, None)
