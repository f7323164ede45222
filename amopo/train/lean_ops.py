"""Exact re-implementations of two transformer pieces that keep fewer activations for backward.

Autograd saves every intermediate a backward formula reads. For the SwiGLU MLP and RMSNorm of
Llama-style models most of those are cheap elementwise results, and recomputing them in backward
costs next to nothing, while storing them costs a large share of the activation memory:

    SwiGLU + down projection   out = (silu(g) ⊙ u) W_dᵀ (+ b)
        plain autograd keeps g, silu(g), u and h = silu(g) ⊙ u     (4 × intermediate size per token)
        here: g and u; h is recomputed in backward                 (2 ×)
        backward: ∂h = ∂out W_d,  ∂W_d = ∂outᵀ h,  ∂u = ∂h ⊙ silu(g),
                  ∂g = ∂h ⊙ u ⊙ σ(g) (1 + g (1 − σ(g)))
    RMSNorm                    y = w ⊙ x̂,  x̂ = x · r,  r = (mean(x²) + ε)^(−1/2)   (fp32, as HF computes it)
        plain autograd keeps x and x̂ (2 × hidden size per token); here x and r
        backward: ∂w = Σ ∂y ⊙ x̂,  ∂x = r (∂x̂ − x̂ · mean(∂x̂ ⊙ x̂)),  ∂x̂ = ∂y ⊙ w

Same values and gradients as the modules' own forward, up to float rounding (tests/test_fast_path.py).
Under bf16/fp16 autocast both run forward and backward in the caller's autocast state
(:mod:`amopo.objectives.autocast`), so their matmuls are autocast as nn.Linear's are.
:func:`use_lean_activations` swaps the forwards of the modules it recognises (by class name, with
plain ``nn.Linear`` projections and a SiLU activation) and leaves anything else alone: LoRA-wrapped
projections, sharded weights, other activations or norms with another formula.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from amopo.objectives.autocast import autocast_aware
from amopo.train.forward import is_sharded

# Norms computing w ⊙ x / sqrt(mean(x²) + ε) in fp32 (Gemma's (1 + w) variant is deliberately absent).
RMS_NORMS = ("LlamaRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "MistralRMSNorm", "Qwen3MoeRMSNorm")
SWIGLU_MLPS = ("LlamaMLP", "Qwen2MLP", "Qwen3MLP", "MistralMLP")


class _SwiGLUDown(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate: Tensor, up: Tensor, weight: Tensor, bias: Tensor | None):
        ctx.save_for_backward(gate, up, weight)
        ctx.has_bias = bias is not None
        return F.linear(F.silu(gate) * up, weight, bias)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        gate, up, weight = ctx.saved_tensors
        sig = torch.sigmoid(gate)
        act = gate * sig
        grad_h = grad_out @ weight
        grad_w = grad_b = None
        if ctx.needs_input_grad[2]:
            h = act * up
            grad_w = grad_out.reshape(-1, grad_out.shape[-1]).t() @ h.reshape(-1, h.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_b = grad_out.reshape(-1, grad_out.shape[-1]).sum(0)
        grad_up = grad_h * act
        grad_gate = grad_h * up * sig * (1 + gate * (1 - sig))
        return grad_gate, grad_up, grad_w, grad_b


def _wide(t: Tensor) -> Tensor:
    """``t`` in at least fp32 (bf16/fp16 → fp32; fp32 and fp64 unchanged)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, eps: float):
        rstd = torch.rsqrt(_wide(x).pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rstd)
        return weight * (_wide(x) * rstd).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        x, weight, rstd = ctx.saved_tensors
        x_hat = _wide(x) * rstd
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = (_wide(grad_y) * _wide(x_hat.to(x.dtype))).reshape(-1, x.shape[-1]).sum(0).to(weight.dtype)
        grad_hat = _wide(grad_y * weight)
        grad_x = rstd * (grad_hat - x_hat * (grad_hat * x_hat).mean(-1, keepdim=True))
        return grad_x.to(x.dtype), grad_w, None


swiglu_down = autocast_aware(_SwiGLUDown)
rms_norm = autocast_aware(_RMSNorm)


def _lean_mlp_forward(self, x: Tensor) -> Tensor:
    return swiglu_down(self.gate_proj(x), self.up_proj(x), self.down_proj.weight, self.down_proj.bias)


def _lean_norm_forward(self, x: Tensor) -> Tensor:
    return rms_norm(x, self.weight, self.variance_epsilon)


def _is_silu(act) -> bool:
    # nn.SiLU, or transformers' SiLUActivation (ACT2FN["silu"]), which is F.silu under another name
    return isinstance(act, nn.SiLU) or type(act).__name__ == "SiLUActivation"


def _is_swiglu_mlp(module: nn.Module) -> bool:
    return (type(module).__name__ in SWIGLU_MLPS
            and all(type(getattr(module, n, None)) is nn.Linear for n in ("gate_proj", "up_proj", "down_proj"))
            and _is_silu(getattr(module, "act_fn", None)) and not is_sharded(module.down_proj.weight))


def _is_rms_norm(module: nn.Module) -> bool:
    return (type(module).__name__ in RMS_NORMS and isinstance(getattr(module, "weight", None), nn.Parameter)
            and isinstance(getattr(module, "variance_epsilon", None), float) and not is_sharded(module.weight))


def use_lean_activations(model: nn.Module) -> dict[str, int]:
    """Swap the forward of every recognised SwiGLU MLP and RMSNorm in ``model``, in place;
    returns how many of each were swapped (``{"mlp": n, "rms_norm": m}``)."""
    counts = {"mlp": 0, "rms_norm": 0}
    for module in model.modules():
        if _is_swiglu_mlp(module):
            module.forward = types.MethodType(_lean_mlp_forward, module)
            counts["mlp"] += 1
        elif _is_rms_norm(module):
            module.forward = types.MethodType(_lean_norm_forward, module)
            counts["rms_norm"] += 1
    return counts
