"""bf16 and fp16 autocast on every fast-path option (lean activations, chunked log-probs, packing,
--compile) and every objective: no dtype error, every parameter moves, and losses and gradients
agree with fp32.

Tolerance. bf16 keeps 8 significant bits (unit roundoff u = 2⁻⁸ ≈ 0.39%); autocast rounds the inputs
of each matmul once and accumulates in fp32, so each layer adds a relative error of order u, forward
and backward. Through the tiny model's two blocks and the head the parameter gradients should stay
within a few u of fp32: we require a relative error ‖g − g₃₂‖/‖g₃₂‖ ≤ 4u = 2⁻⁶ ≈ 1.6% for every
parameter (measured: at most 0.9% in bf16, 0.6% in fp16, whose u is 8× smaller) and the same bound
on each per-example loss relative to max(1, |loss|).

Runs on CPU (torch's CPU autocast takes the same dtype paths through hand-written backward passes
as CUDA's) and on CUDA too where a GPU is present (bench/gpu_check.sh runs this file there).
"""

from __future__ import annotations

import copy

import pytest
import torch

from amopo.objectives.autocast import autocast_aware
from amopo.train.config import TrainConfig
from amopo.train.lean_ops import rms_norm, swiglu_down, use_lean_activations
from amopo.train.step import micro_step, sequence_stats
from tests.helpers.token_rows import DIMS, token_rows
from tests.helpers.training import saved_weights, train_config

REL_TOL = 2.0 ** -6
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def lean_model(tiny_model_dir):
    from amopo.models import load_model

    model = load_model(str(tiny_model_dir))
    assert use_lean_activations(model) == {"mlp": 2, "rms_norm": 5}
    return model


def _autocast_forward(model, device: str, dtype: torch.dtype | None):
    """The model with its forward under autocast, as accelerate's prepare wraps it."""
    if dtype is not None:
        forward = model.forward
        model.forward = lambda *a, **k: torch.autocast(device, dtype=dtype)(forward)(*a, **k)
    return model


def _step(model, cfg: TrainConfig, device: str, dtype: torch.dtype | None):
    policy = _autocast_forward(copy.deepcopy(model).to(device), device, dtype)
    reference = copy.deepcopy(model).to(device).requires_grad_(False)
    with torch.no_grad():   # a reference unlike the policy, so DPO margins are not all zero
        for p in reference.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())).to(device))
    per_example, _, _ = micro_step(cfg, policy, token_rows(5), dimensions=DIMS, epoch=0, pad_id=0, device=device,
                                   reference_logps=lambda rows, batch: sequence_stats(reference, batch).logp_sum)
    per_example.sum().backward()
    return per_example.detach().float().cpu(), {n: p.grad.float().cpu() for n, p in policy.named_parameters()}


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).norm() / want.norm().clamp_min(1e-12)).item()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", sorted(DTYPES))
@pytest.mark.parametrize("loss", ["amopo", "simpo", "dpo", "modpo"])
def test_fast_path_under_autocast_agrees_with_fp32(lean_model, loss, precision, device):
    if device == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    cfg = TrainConfig(objective=loss, logprob_chunk_rows=7)   # packing, chunked log-probs, lean activations on
    loss32, grads32 = _step(lean_model, cfg, device, None)
    loss_mp, grads_mp = _step(lean_model, cfg, device, DTYPES[precision])
    assert torch.all((loss_mp - loss32).abs() <= REL_TOL * loss32.abs().clamp_min(1.0)), (loss_mp, loss32)
    assert grads_mp.keys() == grads32.keys()
    for name, g in grads32.items():
        assert grads_mp[name].dtype == torch.float32, name   # fp32 master weights get fp32 gradients
        if g.norm() > 0:
            err = _relative_error(grads_mp[name], g)
            assert err <= REL_TOL, f"{name}: relative gradient error {err:.4f} > {REL_TOL:.4f}"


@pytest.mark.parametrize("device", DEVICES)
def test_custom_functions_run_their_backward_in_the_forward_autocast_state(device):
    """The documented pattern (torch.amp.custom_fwd/custom_bwd): a bf16 gradient meets the fp32 weight
    inside an autocast matmul; each input gets its gradient in its own dtype."""
    g = torch.Generator().manual_seed(0)
    gate, up = (torch.randn(3, 5, 16, generator=g).to(device, torch.bfloat16).requires_grad_() for _ in range(2))
    weight = torch.randn(8, 16, generator=g).to(device).requires_grad_()
    x = torch.randn(3, 5, 8, generator=g).to(device).requires_grad_()
    scale = torch.rand(8, generator=g).to(device).requires_grad_()
    with torch.autocast(device, dtype=torch.bfloat16):
        out = rms_norm(swiglu_down(gate, up, weight, None).float() + x, scale, 1e-6)
    out.float().pow(2).sum().backward()
    assert (gate.grad.dtype, up.grad.dtype) == (torch.bfloat16, torch.bfloat16)
    assert (weight.grad.dtype, x.grad.dtype, scale.grad.dtype) == (torch.float32,) * 3

    # The same in fp32 without autocast, from the same (bf16-representable) values.
    ref = [t.detach().float().requires_grad_() for t in (gate, up, weight, x, scale)]
    out32 = rms_norm(swiglu_down(ref[0], ref[1], ref[2], None) + ref[3], ref[4], 1e-6)
    out32.pow(2).sum().backward()
    for t, r in zip((gate, up, weight, x, scale), ref):
        assert _relative_error(t.grad.float(), r.grad) <= 4 * REL_TOL


def test_autocast_aware_keeps_one_variant_per_device_type():
    class Double(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return 2 * x

        @staticmethod
        def backward(ctx, grad):
            return 2 * grad

    double = autocast_aware(Double)
    x = torch.ones(3, requires_grad=True)
    double(x).sum().backward()
    double(x).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), 4.0))


@pytest.mark.parametrize("overrides", [
    dict(objective="amopo", mixed_precision="bf16"),
    dict(objective="simpo", mixed_precision="bf16"),
    dict(objective="dpo", mixed_precision="bf16"),
    dict(objective="modpo", mixed_precision="bf16"),
    dict(objective="amopo", mixed_precision="fp16"),
    dict(objective="amopo", mixed_precision="bf16", compile=True),
], ids=lambda o: "-".join(str(v) for v in o.values()))
def test_training_in_mixed_precision_moves_every_parameter(prepared, tiny_model_dir, mlflow_uri, tmp_path,
                                                           overrides):
    from amopo.train.loop import train

    before = _weights_of(tiny_model_dir)
    summary = train(train_config(prepared, tiny_model_dir, tmp_path / "out", mlflow_uri, max_steps=3, **overrides))
    after = saved_weights(tmp_path / "out")
    assert summary["steps"] == 3
    assert summary["mixed_precision"] == overrides["mixed_precision"]
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, f"parameters that did not move: {unchanged}"


def _weights_of(model_dir) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))
