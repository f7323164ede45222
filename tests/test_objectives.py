"""Objectives: expected values are worked out by hand with math.log / math.exp."""

from __future__ import annotations

import math

import pytest
import torch

from amopo.objectives import (SeqStats, adaptive_weights, amopo_loss, average_logprob, dpo_loss,
                              example_noise, gaussian_weights, implicit_rewards, mean_weights,
                              modpo_loss, response_token_stats, sft_loss, simpo_loss,
                              uniform_weights)


def softplus(x: float) -> float:
    """−log σ(z) = log(1 + e^{−z}); called with x = −z."""
    return math.log1p(math.exp(x))


def close(actual, expected, tol=1e-5):
    if isinstance(actual, torch.Tensor):
        actual = actual.detach().item()
    return abs(actual - expected) <= tol


# ---------------------------------------------------------------- response_token_stats

# Logits are log-probabilities, so log_softmax(logits) returns them unchanged and every p_t is
# readable from this table. probs[n][t] is the distribution emitted at position t, which predicts
# labels[n][t + 1]. Position 4 never predicts anything; it holds a wild row to catch a bad shift.
PROBS = [
    [[0.1, 0.1, 0.8], [0.2, 0.3, 0.5], [0.6, 0.1, 0.3], [0.3, 0.3, 0.4]],
    [[0.5, 0.25, 0.25], [0.2, 0.2, 0.6], [0.1, 0.7, 0.2], [0.15, 0.25, 0.6]],
    [[0.7, 0.2, 0.1], [0.1, 0.4, 0.5], [0.2, 0.3, 0.5], [0.9, 0.05, 0.05]],
]
LABELS = [
    [-100, -100, 2, 0, -100],  # prompt, 2 response tokens, right padding: p = 0.5, 0.6
    [1, -100, -100, -100, 1],   # label 0 is never predicted; one response token: p = 0.25
    [-100, 0, 1, 2, 0],         # four tokens: p = 0.7, 0.4, 0.5, 0.9
]
EXPECTED_P = [[0.5, 0.6], [0.25], [0.7, 0.4, 0.5, 0.9]]


def make_logits(dtype=torch.float32, requires_grad=False):
    rows = [[[math.log(p) for p in dist] for dist in seq] + [[30.0, -30.0, 5.0]] for seq in PROBS]
    return torch.tensor(rows, dtype=dtype, requires_grad=requires_grad)


def test_token_stats_sum_count_and_shift():
    stats = response_token_stats(make_logits(), torch.tensor(LABELS))
    assert isinstance(stats, SeqStats)
    for n, ps in enumerate(EXPECTED_P):
        assert close(stats.logp_sum[n], sum(math.log(p) for p in ps))
        assert stats.n_tokens[n].item() == len(ps)
        assert stats.n_tokens.dtype.is_floating_point


def test_token_stats_prob_mean_and_unbiased_std():
    stats = response_token_stats(make_logits(), torch.tensor(LABELS))
    # sequence 0: mean 0.55, unbiased std sqrt((0.05² + 0.05²) / 1)
    assert close(stats.prob_mean[0], 0.55)
    assert close(stats.prob_std[0], math.sqrt(2 * 0.05 ** 2))
    # sequence 2: mean 0.625, deviations 0.075, −0.225, −0.125, 0.275
    assert close(stats.prob_mean[2], 0.625)
    var = (0.075 ** 2 + 0.225 ** 2 + 0.125 ** 2 + 0.275 ** 2) / 3
    assert close(stats.prob_std[2], math.sqrt(var))
    # one token: mean is the probability, std is undefined
    assert close(stats.prob_mean[1], 0.25)
    assert math.isnan(stats.prob_std[1].item())


def test_token_stats_ignore_index_and_fp32():
    labels = torch.tensor(LABELS)
    labels = torch.where(labels == -100, torch.full_like(labels, -1), labels)
    stats = response_token_stats(make_logits(torch.float16), labels, ignore_index=-1)
    assert stats.logp_sum.dtype == torch.float32
    assert close(stats.logp_sum[0], math.log(0.5) + math.log(0.6), tol=2e-3)


def test_token_stats_gradient_only_through_logp_sum():
    logits = make_logits(requires_grad=True)
    stats = response_token_stats(logits, torch.tensor(LABELS))
    assert stats.logp_sum.requires_grad
    assert not stats.prob_mean.requires_grad and not stats.prob_std.requires_grad
    stats.logp_sum.sum().backward()
    grad = logits.grad
    # d log softmax(x)_y / dx = onehot(y) − softmax(x); position 1 of sequence 0 predicts label 2
    expected = [0.0 - 0.2, 0.0 - 0.3, 1.0 - 0.5]
    for v, e in zip(grad[0, 1].tolist(), expected):
        assert close(v, e)
    # prompt positions, padding and the never-used last position get no gradient
    assert grad[0, 0].abs().sum() == 0
    assert grad[0, 3].abs().sum() == 0
    assert grad[:, 4].abs().sum() == 0
    assert grad[1, :3].abs().sum() == 0


def test_average_logprob_and_empty_response():
    stats = SeqStats(torch.tensor([-3.0, 0.0]), torch.tensor([2.0, 0.0]),
                     torch.tensor([0.0, 0.0]), torch.tensor([0.0, 0.0]))
    avg = average_logprob(stats)
    assert avg.tolist() == [-1.5, 0.0]


# ---------------------------------------------------------------- losses

def test_simpo_loss_by_hand():
    # z = 0.8 * (−1.0 − (−2.5)) − 2.0 = −0.8 → ℓ = log(1 + e^{0.8})
    loss = simpo_loss(torch.tensor([-1.0]), torch.tensor([-2.5]), beta=0.8, gamma=2.0)
    assert close(loss[0], softplus(0.8))
    assert close(loss[0], 1.1711007, tol=1e-6)


def test_simpo_loss_stable_for_large_margins():
    loss = simpo_loss(torch.tensor([-300.0, 0.0]), torch.tensor([0.0, -300.0]), beta=1.0, gamma=0.0)
    assert torch.isfinite(loss).all()
    assert close(loss[0], 300.0, tol=1e-3)
    assert close(loss[1], 0.0, tol=1e-6)


def test_amopo_loss_per_dim_and_weighted_reduction():
    avg_w = torch.tensor([[-1.0, -0.5], [-2.0, -1.0]], requires_grad=True)
    avg_l = torch.tensor([[-2.5, -0.5], [-1.0, -3.0]])
    alpha = torch.tensor([[0.25, 0.75], [0.6, 0.4]], requires_grad=True)
    per_example, per_dim = amopo_loss(avg_w, avg_l, alpha, beta=0.8, gamma=2.0)
    # z = 0.8·(ā_w − ā_l) − 2: −0.8, −2.0, −2.8, −0.4
    l = [[softplus(0.8), softplus(2.0)], [softplus(2.8), softplus(0.4)]]
    for b in range(2):
        for k in range(2):
            assert close(per_dim[b, k], l[b][k])
    e0 = (0.25 * l[0][0] + 0.75 * l[0][1]) / 2
    e1 = (0.6 * l[1][0] + 0.4 * l[1][1]) / 2
    assert close(per_example[0], e0) and close(per_example[1], e1)
    assert close(per_example.mean(), (alpha * per_dim).mean().item())
    per_example.sum().backward()
    assert avg_w.grad is not None and alpha.grad is None


def test_dpo_loss_by_hand():
    # β[(−10 − −12) − (−15 − −14)] = 0.1 · 3 = 0.3
    loss = dpo_loss(torch.tensor([-10.0]), torch.tensor([-15.0]), torch.tensor([-12.0]),
                    torch.tensor([-14.0]), beta=0.1)
    assert close(loss[0], softplus(-0.3))


def test_modpo_loss_by_hand():
    # One other objective, r_w − r_l = 2.0 − 0.5, its weight 1 − w_k.
    # w_k = 0.5: (β/w_k)·3 − (1/w_k)·0.5·1.5 = 0.2·3 − 1.5 = −0.9
    loss = modpo_loss(torch.tensor([-10.0]), torch.tensor([-15.0]), torch.tensor([-12.0]),
                      torch.tensor([-14.0]), torch.tensor([0.5 * 1.5]), beta=0.1, weight=0.5)
    assert close(loss[0], softplus(0.9))
    # w_k = 0.8: 0.125·3 − 1.25·(0.2·1.5) = 0.0 → log 2
    loss = modpo_loss(torch.tensor([-10.0]), torch.tensor([-15.0]), torch.tensor([-12.0]),
                      torch.tensor([-14.0]), torch.tensor([0.2 * 1.5]), beta=0.1, weight=0.8)
    assert close(loss[0], math.log(2.0))


def test_modpo_weight_one_is_dpo():
    g = torch.Generator().manual_seed(0)
    lw, ll, rw, rl = (torch.randn(5, generator=g) * 10 for _ in range(4))
    assert torch.allclose(modpo_loss(lw, ll, rw, rl, torch.zeros(5), beta=0.3, weight=1.0),
                          dpo_loss(lw, ll, rw, rl, beta=0.3))


@pytest.mark.parametrize("weight", [0.0, -0.1, 1.5, float("nan")])
def test_modpo_rejects_bad_weight(weight):
    x = torch.zeros(1)
    with pytest.raises(ValueError, match="weight"):
        modpo_loss(x, x, x, x, x, beta=0.1, weight=weight)


def test_sft_and_implicit_rewards():
    avg = torch.tensor([-1.25, -0.5])
    assert sft_loss(avg).tolist() == [1.25, 0.5]
    assert implicit_rewards(avg, 0.8).tolist() == pytest.approx([-1.0, -0.4])


# ---------------------------------------------------------------- adaptive weights

def test_gaussian_weights_by_hand():
    mu_w, sd_w = torch.tensor([[0.5, 0.2]]), torch.tensor([[0.1, 0.2]])
    mu_l, sd_l = torch.tensor([[0.3, 0.4]]), torch.tensor([[0.05, 0.1]])
    noise = torch.tensor([[[1.0, 2.0], [-1.0, 0.5]]])
    alpha = gaussian_weights(mu_w, sd_w, mu_l, sd_l, noise)
    # s_0 = 0.5 + 0.1·1 + 0.3 + 0.05·2 = 1.0 ; s_1 = 0.2 − 0.2 + 0.4 + 0.1·0.5 = 0.45
    a0 = math.exp(1.0) / (math.exp(1.0) + math.exp(0.45))
    assert close(alpha[0, 0], a0) and close(alpha[0, 1], 1 - a0)


def test_gaussian_weights_rows_sum_to_one():
    g = torch.Generator().manual_seed(1)
    mu_w, mu_l = torch.rand(6, 4, generator=g), torch.rand(6, 4, generator=g)
    sd_w, sd_l = torch.rand(6, 4, generator=g) * 0.3, torch.rand(6, 4, generator=g) * 0.3
    alpha = gaussian_weights(mu_w, sd_w, mu_l, sd_l, torch.randn(6, 4, 2, generator=g))
    assert alpha.shape == (6, 4)
    assert torch.allclose(alpha.sum(-1), torch.ones(6))
    assert (alpha > 0).all()


def test_gaussian_weights_non_finite_scores_become_zero():
    mu_w = torch.tensor([[0.5, 0.4, 0.9], [0.5, 0.5, 0.5]])
    sd_w = torch.tensor([[float("nan"), 0.0, 0.0], [float("nan")] * 3])
    mu_l = torch.tensor([[0.3, float("inf"), 0.1], [0.2, 0.2, 0.2]])
    sd_l = torch.zeros(2, 3)
    alpha = gaussian_weights(mu_w, sd_w, mu_l, sd_l, torch.ones(2, 3, 2))
    # row 0 scores: NaN → 0, inf → 0, 1.0
    denom = 2 + math.exp(1.0)
    assert close(alpha[0, 0], 1 / denom) and close(alpha[0, 1], 1 / denom)
    assert close(alpha[0, 2], math.exp(1.0) / denom)
    # row 1: every score NaN → all 0 → uniform
    assert torch.allclose(alpha[1], torch.full((3,), 1 / 3))


def test_gaussian_weights_flatten():
    mu_w = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    zeros = torch.zeros(2, 2)
    alpha = gaussian_weights(mu_w, zeros, zeros, zeros, torch.randn(2, 2, 2), flatten=True)
    assert close(alpha.sum(), 1.0)
    denom = sum(math.exp(v) for v in (0.1, 0.2, 0.3, 0.4))
    assert close(alpha[1, 1], math.exp(0.4) / denom)
    # at batch size 1 flattening changes nothing
    one = [t[:1] for t in (mu_w, zeros, zeros, zeros)]
    noise = torch.randn(1, 2, 2)
    assert torch.allclose(gaussian_weights(*one, noise, flatten=True),
                          gaussian_weights(*one, noise, flatten=False))


def test_gaussian_weights_carry_no_gradient():
    mu_w = torch.rand(2, 3, requires_grad=True)
    sd_w = torch.rand(2, 3, requires_grad=True)
    mu_l = torch.rand(2, 3, requires_grad=True)
    sd_l = torch.rand(2, 3, requires_grad=True)
    alpha = gaussian_weights(mu_w, sd_w, mu_l, sd_l, torch.randn(2, 3, 2))
    assert not alpha.requires_grad and alpha.grad_fn is None
    assert not mean_weights(mu_w, mu_l).requires_grad


def test_gaussian_weights_zero_sd_is_softmax_of_means():
    mu_w, mu_l = torch.tensor([[0.2, 0.7, 0.1]]), torch.tensor([[0.4, 0.1, 0.3]])
    zeros = torch.zeros(1, 3)
    alpha = gaussian_weights(mu_w, zeros, mu_l, zeros, torch.randn(1, 3, 2))
    denom = math.exp(0.6) + math.exp(0.8) + math.exp(0.4)
    for k, s in enumerate((0.6, 0.8, 0.4)):
        assert close(alpha[0, k], math.exp(s) / denom)
    assert torch.allclose(alpha, mean_weights(mu_w, mu_l))


def test_gaussian_weights_sampling_distribution():
    # s_0 − s_1 ~ N(1.0 − 0.8, 0.2² + 0.1² + 0.1² + 0.2²) = N(0.2, 0.1),
    # so P(α_0 > α_1) = Φ(0.2 / √0.1).
    n = 20000
    mu_w = torch.tensor([0.6, 0.5]).expand(n, 2)
    mu_l = torch.tensor([0.4, 0.3]).expand(n, 2)
    sd_w = torch.tensor([0.2, 0.1]).expand(n, 2)
    sd_l = torch.tensor([0.1, 0.2]).expand(n, 2)
    noise = torch.randn(n, 2, 2, generator=torch.Generator().manual_seed(3))
    alpha = gaussian_weights(mu_w, sd_w, mu_l, sd_l, noise)
    expected = 0.5 * (1 + math.erf(0.2 / math.sqrt(0.1) / math.sqrt(2)))
    frac = (alpha[:, 0] > alpha[:, 1]).float().mean().item()
    assert abs(frac - expected) < 0.015


def test_uniform_weights():
    alpha = uniform_weights((3, 4))
    assert alpha.shape == (3, 4) and torch.all(alpha == 0.25)


def test_adaptive_weights_dispatch():
    mu_w, mu_l = torch.tensor([[0.2, 0.7]]), torch.tensor([[0.4, 0.1]])
    sd_w, sd_l = torch.tensor([[0.1, 0.2]]), torch.tensor([[0.3, 0.1]])
    noise = torch.tensor([[[0.5, -1.0], [2.0, 0.0]]])
    assert torch.equal(adaptive_weights("gaussian", mu_w=mu_w, sd_w=sd_w, mu_l=mu_l, sd_l=sd_l,
                                        noise=noise),
                       gaussian_weights(mu_w, sd_w, mu_l, sd_l, noise))
    assert torch.equal(adaptive_weights("mean", mu_w=mu_w, mu_l=mu_l), mean_weights(mu_w, mu_l))
    assert torch.all(adaptive_weights("uniform", mu_w=mu_w, mu_l=mu_l) == 0.5)
    with pytest.raises(ValueError, match="noise"):
        adaptive_weights("gaussian", mu_w=mu_w, mu_l=mu_l)


def test_adaptive_weights_unknown_method():
    with pytest.raises(ValueError, match="gaussian, mean, uniform") as info:
        adaptive_weights("softmax", mu_w=torch.zeros(1, 2), mu_l=torch.zeros(1, 2))
    assert "'softmax'" in str(info.value)


# ---------------------------------------------------------------- example_noise

def test_example_noise_shape_and_reproducible():
    a = example_noise([4, 9, 2], 4, seed=42, epoch=0)
    b = example_noise([4, 9, 2], 4, seed=42, epoch=0)
    assert a.shape == (3, 4, 2) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])


def test_example_noise_changes_with_epoch_and_seed():
    base = example_noise([4, 9], 4, seed=42, epoch=0)
    assert not torch.allclose(base, example_noise([4, 9], 4, seed=42, epoch=1))
    assert not torch.allclose(base, example_noise([4, 9], 4, seed=43, epoch=0))


def test_example_noise_independent_of_batch_composition():
    small = example_noise([3, 5], 4, seed=7, epoch=2)
    big = example_noise([1, 3, 5, 7], 4, seed=7, epoch=2)
    assert torch.equal(small, big[1:3])
    assert torch.equal(example_noise([5], 4, seed=7, epoch=2)[0], big[2])


def test_example_noise_is_standard_normal():
    z = example_noise(range(1000), 4, seed=0, epoch=0)
    assert abs(z.mean().item()) < 0.05
    assert abs(z.std().item() - 1.0) < 0.05


def test_example_noise_empty_batch():
    assert example_noise([], 3, seed=0, epoch=0).shape == (0, 3, 2)
