"""Dropout off for training, as the authors' trainer has it: their LLaMA-Factory fork calls TRL's
``disable_dropout_in_model`` on the policy (and on the reference) for every preference stage, AMoPO's
included. The objectives compare log-probs of the same sequences under the policy and a reference or
across K conditioned copies; dropout noise in the policy's pass alone would bias those comparisons
(with it the DPO log-ratios are not zero at step 0).

Switched off, and counted per module:
  - every dropout module (``nn.Dropout`` and its 1d/2d/3d/alpha kin): ``p = 0``, as TRL does;
  - every module attribute holding a dropout rate that the forward reads, e.g. Llama's and Qwen2's
    ``attention_dropout``, which transformers hands to the attention kernel without any nn.Dropout
    (TRL's function misses these).
The models' configs get their dropout settings set to 0 as well, for models that read the config at
forward time (Falcon, GPT-Neo), but the trained model is written with the base model's values
(:func:`base_config_values`): inference never applies dropout, and a further fine-tune of the written
model starts from the base model's settings, not from a choice made by this trainer.

Call it before LoRA adapters are added, so that ``lora_dropout`` applies as configured.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from torch import nn
from torch.nn.modules.dropout import _DropoutNd


@dataclass
class DropoutOff:
    """What :func:`disable_dropout` changed."""
    modules: int                                          # modules whose dropout it set to 0
    config: dict[str, float] = field(default_factory=dict)   # the configs' nonzero dropout settings, as loaded
    _saved: list = field(default_factory=list, repr=False)   # (config object, attribute, value as loaded)

    def summary(self) -> dict:
        """The fields recorded in metrics.json."""
        return {"dropout_disabled": True, "dropout_modules_changed": self.modules,
                "dropout_config_kept": dict(self.config)}

    def describe(self) -> str:
        """One line for the trainer's start-up output."""
        kept = ", ".join(f"{k}={v:g}" for k, v in self.config.items())
        return (f"dropout: off for training ({self.modules} modules set to 0"
                + (f"; the written config keeps {kept}" if kept else "") + ")")


def is_rate_name(name: str) -> bool:
    """Whether an attribute of this name holds a dropout probability (``attention_dropout``,
    ``hidden_dropout_prob``, GPT-2's ``resid_pdrop`` ...)."""
    return "dropout" in name or name.endswith("pdrop")


def _nonzero_rates(obj) -> list[tuple[str, float]]:
    """The (name, value) of ``obj``'s own numeric dropout-rate attributes that are not 0."""
    return [(name, value) for name, value in vars(obj).items()
            if is_rate_name(name) and isinstance(value, (int, float)) and not isinstance(value, bool) and value]


def _configs(model: nn.Module) -> list:
    """The distinct transformers configs held by ``model``'s modules, the outermost first."""
    from transformers import PretrainedConfig

    seen: dict[int, object] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if isinstance(config, PretrainedConfig):
            seen.setdefault(id(config), config)
    return list(seen.values())


def disable_dropout(model: nn.Module) -> DropoutOff:
    """Set every dropout probability of ``model`` (modules, module rate attributes, configs) to 0 in
    place; returns what was changed and the configs' values as loaded."""
    changed = 0
    for module in model.modules():
        hit = False
        if isinstance(module, _DropoutNd) and module.p:
            module.p = 0.0
            hit = True
        for name, _ in _nonzero_rates(module):
            setattr(module, name, 0.0)
            hit = True
        changed += hit
    off = DropoutOff(changed)
    for i, config in enumerate(_configs(model)):
        for name, value in _nonzero_rates(config):
            off.config[name if i == 0 else f"{type(config).__name__}.{name}"] = value
            off._saved.append((config, name, value))
            setattr(config, name, 0.0)
    return off


@contextmanager
def base_config_values(off: DropoutOff | None) -> Iterator[None]:
    """Within the block the configs hold their dropout settings as loaded (to write the model); after
    it, 0 again. ``None`` (nothing was switched off) does nothing."""
    saved = off._saved if off is not None else []
    for config, name, value in saved:
        setattr(config, name, value)
    try:
        yield
    finally:
        for config, name, _ in saved:
            setattr(config, name, 0.0)
