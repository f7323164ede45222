"""``--attention flex_attention``: the BlockMask of shared-prompt packing is the dense block mask,
and a model on flex_attention gives SDPA's statistics, gradients and a working training run.

Where it runs. torch 2.13's flex_attention has no backward pass on CPU: it raises
NotImplementedError for inputs that require grad, eagerly and under torch.compile alike. On CPU
these tests therefore check the mask and the forward pass (transformers always runs flex_attention
through torch.compile; the first call builds inductor's CPU kernel, 15-20 s on a 2-core machine),
and that training with it is refused with a ConfigError; the gradient and training tests run on
CUDA only and skip elsewhere.

The model has head_dim 16 (hidden 64, 4 heads), the smallest the CUDA flex kernel takes.

Tolerance (fp32 throughout): 1e-5 absolute and relative on CPU, as in test_fast_path.py (the two
kernels add the same softmax terms in different orders; measured: at most 1.2e-7 on the logits).
On CUDA 1e-4, for block-wise reductions in a different order; no GPU has measured it yet.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from amopo.errors import ConfigError
from amopo.train.forward import check_attention_device
from amopo.train.loop import train
from amopo.train.packing import Group, block_attention_mask, collate_packed, flex_block_mask, pack_groups
from amopo.train.step import sequence_stats
from tests.helpers.token_rows import token_rows
from tests.helpers.training import saved_weights, train_config

CUDA = torch.cuda.is_available()
NO_CPU_BACKWARD = ("torch 2.13's flex_attention has no backward pass on CPU (NotImplementedError: "
                   "FlexAttention does not support backward on CPU); gradients and training need CUDA")
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])
TOL = {"cpu": 1e-5, "cuda": 1e-4}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from amopo.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-flex"), hidden_size=64, num_heads=4)


def _models(model_dir: Path, device: str):
    """The same weights on SDPA and on flex_attention."""
    from amopo.models import load_model

    return [load_model(str(model_dir), attn_implementation=a).to(device) for a in ("sdpa", "flex_attention")]


def _long_layout() -> dict:
    """Rows longer than one 128-token block, one of them holding two groups, with padding."""
    g = torch.Generator().manual_seed(0)
    ids = lambda m: torch.randint(3, 300, (m,), generator=g).tolist()  # noqa: E731
    sizes = [(120, 90, 70), (100, 60, 80), (40, 30, 20), (10, 50, 5)]
    groups = [Group(ids(p), [ids(w), ids(l)], [2 * i, 2 * i + 1]) for i, (p, w, l) in enumerate(sizes)]
    return pack_groups(groups, pad_id=0)


def _blocks(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[R, 1, L, L] → [R, 1, ⌈L/q⌉, ⌈L/kv⌉]: whether any query of a block attends any key of a block."""
    q, kv = size
    rows, _, length, _ = mask.shape
    padded = torch.zeros(rows, 1, -(-length // q) * q, -(-length // kv) * kv, dtype=torch.bool)
    padded[..., :length, :length] = mask
    return padded.view(rows, 1, padded.shape[2] // q, q, padded.shape[3] // kv, kv).any(dim=5).any(dim=3)


@pytest.mark.parametrize("layout", ["conditioned", "plain", "long"])
def test_flex_block_mask_equals_the_dense_block_mask(layout):
    from torch.nn.attention.flex_attention import create_mask

    batch = _long_layout() if layout == "long" else collate_packed(token_rows(5), layout == "conditioned", 0)
    group, kind = batch["segment_group"], batch["segment_kind"]
    dense = block_attention_mask(group, kind)
    block_mask = flex_block_mask(group, kind)
    rows, length = group.shape
    assert block_mask.shape == (rows, 1, length, length)
    # Element by element: the mask_mod on every (row, query, key) index.
    assert torch.equal(create_mask(block_mask.mask_mod, rows, 1, length, length, device="cpu"), dense)
    # Block by block: the blocks the kernel visits are exactly those with an attended pair.
    assert torch.equal(block_mask.to_dense().bool(), _blocks(dense, block_mask.BLOCK_SIZE))
    if layout == "long":
        assert not _blocks(dense, block_mask.BLOCK_SIZE).all()   # some blocks are skipped


@pytest.mark.parametrize("device", DEVICES)
def test_flex_forward_gives_the_sdpa_statistics(model_dir, device):
    sdpa, flex = _models(model_dir, device)
    assert flex.config._attn_implementation == "flex_attention"
    batch = {k: v.to(device) for k, v in collate_packed(token_rows(4), True, 0).items()}
    with torch.no_grad():
        expected, got = sequence_stats(sdpa, batch), sequence_stats(flex, batch)
    for a, b in zip(expected, got):
        assert torch.allclose(a, b, atol=TOL[device], rtol=TOL[device], equal_nan=True), (a - b).abs().max()


@pytest.mark.skipif(not CUDA, reason=NO_CPU_BACKWARD)
@pytest.mark.parametrize("conditioned", [True, False], ids=["conditioned", "plain"])
def test_flex_statistics_and_gradients_equal_sdpa(model_dir, conditioned):
    batch = {k: v.cuda() for k, v in collate_packed(token_rows(4), conditioned, 0).items()}

    def run(model):
        stats = sequence_stats(model, batch)
        avg = stats.logp_sum / stats.n_tokens
        (avg * torch.linspace(-1, 1, avg.numel(), device="cuda")).sum().backward()
        return stats, {n: p.grad for n, p in model.named_parameters()}

    (s_sdpa, g_sdpa), (s_flex, g_flex) = (run(m) for m in _models(model_dir, "cuda"))
    for a, b in zip(s_sdpa, s_flex):
        assert torch.allclose(a, b, atol=TOL["cuda"], rtol=TOL["cuda"], equal_nan=True), (a - b).abs().max()
    for name in g_sdpa:
        assert torch.allclose(g_sdpa[name], g_flex[name], atol=TOL["cuda"], rtol=TOL["cuda"]), name


@pytest.mark.skipif(not CUDA, reason=NO_CPU_BACKWARD)
def test_training_on_flex_attention_changes_every_trainable_parameter(prepared, model_dir, mlflow_uri, tmp_path):
    train(train_config(prepared, model_dir, tmp_path / "run", mlflow_uri, attention="flex_attention"))
    before = load_file(str(model_dir / "model.safetensors"))
    after = saved_weights(tmp_path / "run")
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, f"parameters not updated: {unchanged}"


def test_torch_has_no_flex_backward_on_cpu():
    """The reason training on CPU is refused; when a torch adds the backward, lift the refusal."""
    from torch.nn.attention.flex_attention import flex_attention

    q = torch.randn(1, 1, 4, 16, requires_grad=True)
    with pytest.raises(NotImplementedError, match="backward on CPU"):
        flex_attention(q, q, q)


@pytest.mark.skipif(CUDA, reason="training on flex_attention is refused only without CUDA")
def test_training_on_flex_attention_is_refused_on_cpu(prepared, model_dir, mlflow_uri, tmp_path):
    cfg = train_config(prepared, model_dir, tmp_path / "run", mlflow_uri, attention="flex_attention")
    with pytest.raises(ConfigError, match="'flex_attention' cannot train on cpu: .* no backward pass"):
        train(cfg)
    assert not (tmp_path / "run").exists()   # refused before anything is written


def test_device_check_accepts_flex_on_cuda_and_other_attention_on_cpu():
    check_attention_device("flex_attention", "cuda")
    check_attention_device("sdpa", "cpu")
    with pytest.raises(ConfigError, match="mps"):
        check_attention_device("flex_attention", "mps")
