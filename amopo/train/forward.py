"""Forward passes that stop before the output head, and the checks that say when that is exact.

The model is still called through its outermost wrapper (DDP, PEFT, accelerate), so gradient
synchronisation and adapters behave as usual; only for the duration of the call its output head
is swapped for a pass-through, so ``outputs.logits`` holds the final hidden states and the head is
applied by :func:`amopo.objectives.chunked_logprobs.chunked_token_logprobs` instead.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, NamedTuple

import torch
from torch import nn

from amopo.errors import ConfigError
from amopo.train.packing import block_attention_mask, flex_block_mask

# Config fields that transform logits after the head; with any of them set the bypass would be wrong.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")
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


def output_head(model: nn.Module) -> Head | None:
    """The plain linear output head, where logits are exactly ``head(hidden)``; else None."""
    inner = unwrap(model)
    if any(type(m).__name__.startswith("FullyShardedDataParallel") for m in inner.modules()):
        return None
    config = _config(model)
    for attr in _LOGIT_TRANSFORMS:
        value = getattr(config, attr, None)
        if value not in (None, 1, 1.0, 0, 0.0, False):
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
