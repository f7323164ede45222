"""Custom autograd functions under mixed precision, the way torch documents it for them.

``torch.amp.custom_fwd`` records the autocast state a Function's forward was called in, and
``torch.amp.custom_bwd`` runs its backward in that same state. Without them, a backward written by
hand runs with autocast off, and a bf16/fp16 gradient meets an fp32 weight in a bare matmul (a dtype
error); with them, the matmul is autocast as the forward's was. Gradients returned in a lower
precision than their input are cast back to the input's dtype by autograd, as for built-in ops.

The decorators are bound to one device type at definition time, so :func:`autocast_aware` makes one
variant of the Function per device type, on first use, and dispatches on the first tensor argument.
"""

from __future__ import annotations

from typing import Callable

import torch


def autocast_aware(function: type[torch.autograd.Function]) -> Callable:
    """``apply`` of ``function`` with custom_fwd/custom_bwd for the device of its first tensor argument."""
    variants: dict[str, type[torch.autograd.Function]] = {}

    def variant(device_type: str) -> type[torch.autograd.Function]:
        if device_type not in variants:
            variants[device_type] = type(f"{function.__name__}_{device_type}", (function,), {
                "forward": staticmethod(torch.amp.custom_fwd(function.forward, device_type=device_type)),
                "backward": staticmethod(torch.amp.custom_bwd(function.backward, device_type=device_type)),
            })
        return variants[device_type]

    def apply(*args):
        device_type = next(a.device.type for a in args if isinstance(a, torch.Tensor))
        return variant(device_type).apply(*args)

    apply.__doc__ = function.__doc__
    return apply
