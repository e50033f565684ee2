"""The attention equations of the paper (section III), checked against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from san.model.attention import (
    AttentionBlock,
    PowerMask,
    SharpMask,
    SoftMask,
    ThresholdMask,
    gumbel_softmax_bernoulli,
    minmax_normalize,
    noise_free_mask,
    total_variation,
)


def test_eq3_minmax_on_hand_built_tensor() -> None:
    x = torch.tensor([[[[1.0, 3.0], [5.0, 9.0]], [[-2.0, -2.0], [0.0, 2.0]]]])  # 1 x 2 x 2 x 2
    expected = torch.tensor([[[[0.0, 0.25], [0.5, 1.0]], [[0.0, 0.0], [0.5, 1.0]]]])
    assert torch.allclose(minmax_normalize(x), expected)


def test_eq3_is_per_sample() -> None:
    x = torch.stack([torch.arange(4.0).view(1, 2, 2), 10 * torch.arange(4.0).view(1, 2, 2) - 7])
    pi = minmax_normalize(x)
    assert torch.allclose(pi[0], pi[1])


def test_eq3_constant_channel_is_finite() -> None:
    x = torch.full((2, 3, 4, 4), 7.5)
    pi = minmax_normalize(x)
    assert torch.isfinite(pi).all()
    assert (pi == 0).all()


def test_gumbel_softmax_hard_rate_matches_pi() -> None:
    torch.manual_seed(0)
    pi = torch.tensor([0.05, 0.3, 0.5, 0.7, 0.95])
    draws = 20000
    samples = gumbel_softmax_bernoulli(pi.expand(draws, -1), tau=0.05)
    rate = (samples > 0.5).float().mean(0)
    bound = 4.0 * torch.sqrt(pi * (1 - pi) / draws)  # 4 sigma of a binomial proportion
    assert ((rate - pi).abs() <= bound).all(), (rate, pi, bound)


def test_gumbel_softmax_is_nearly_binary_at_small_tau() -> None:
    torch.manual_seed(1)
    m = gumbel_softmax_bernoulli(torch.full((10000,), 0.5), tau=0.01)
    assert ((m < 0.01) | (m > 0.99)).float().mean() > 0.95


def test_gradients_reach_x_through_the_sampler() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 4, requires_grad=True)
    gen = SharpMask().train()
    m, _ = gen(x)
    (m * torch.randn_like(m)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_eq1_eq2_on_hand_built_case() -> None:
    t = torch.tensor([[[[2.0, -1.0], [4.0, 0.5]]]])  # pi = [[0.6, 0], [1, 0.3]]
    block = AttentionBlock(SharpMask(threshold=0.5), context=None, cross_feature=True).eval()
    f, a, m, pi = block(t)
    assert torch.allclose(pi, torch.tensor([[[[0.6, 0.0], [1.0, 0.3]]]]))
    assert torch.equal(m, torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]]))
    assert torch.allclose(a, torch.tensor([[[[2.0, 0.0], [4.0, 0.0]]]]))  # Eq. 1
    assert torch.allclose(f, torch.tensor([[[[4.0, -1.0], [8.0, 0.5]]]]))  # Eq. 2: (1 + M) T
    f_no_cil, *_ = AttentionBlock(SharpMask(), None, cross_feature=False).eval()(t)
    assert torch.allclose(f_no_cil, a)


def test_eval_mask_is_the_hard_threshold_and_deterministic() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 4, 6, 5)
    gen = SharpMask(threshold=0.4).eval()
    m1, pi = gen(x)
    m2, _ = gen(x)
    assert torch.equal(m1, m2)
    assert torch.equal(m1, (pi > 0.4).float())


def test_noise_free_mask_is_the_median_of_the_relaxed_sample() -> None:
    # By hand: logit(0.75) = ln 3, so at tau 0.5 the mask is sigmoid(2 ln 3) = 9 / (1 + 9).
    assert noise_free_mask(torch.tensor([0.75]), 0.5).item() == pytest.approx(0.9, abs=1e-6)
    torch.manual_seed(0)
    pi = torch.tensor([0.1, 0.4, 0.5, 0.8])
    draws = gumbel_softmax_bernoulli(pi.expand(40001, -1), tau=0.9)
    # The logistic noise is symmetric about 0 and sigmoid is monotone, so the draws' median is
    # the noise-free mask; 40001 draws put the sample median within ~0.01 of it.
    median = draws.median(dim=0).values
    assert torch.allclose(median, noise_free_mask(pi, 0.9), atol=0.02), (median, noise_free_mask(pi, 0.9))


def test_noise_free_generator_is_continuous_and_deterministic() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 4, 6, 5)
    gen = SharpMask(tau=0.8).eval()
    gen.noise_free = True
    m, pi = gen(x)
    assert gen.hard_threshold is None
    assert torch.equal(m, gen(x)[0])
    assert torch.allclose(m, torch.sigmoid(torch.log(pi.clamp(1e-6, 1 - 1e-6) / (1 - pi.clamp(1e-6, 1 - 1e-6))) / 0.8),
                          atol=1e-6)
    assert ((m > 0.05) & (m < 0.95)).any()  # not the 0/1 mask


def test_variants() -> None:
    x = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])  # pi = [0, .25, .5, 1]
    pi = torch.tensor([[[[0.0, 0.25], [0.5, 1.0]]]])
    assert torch.allclose(SoftMask()(x)[0], torch.sigmoid(x))
    assert torch.equal(ThresholdMask(0.3)(x)[0], (pi >= 0.3).float())
    assert torch.allclose(PowerMask(2)(x)[0], pi**2)
    assert torch.allclose(PowerMask(3)(x)[0], pi**3)


def _difference_matrices(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """D1 in R^{(H-1) x H} and D2 in R^{W x (W-1)} exactly as printed in the paper."""
    d1 = torch.zeros(h - 1, h, dtype=torch.float64)
    for i in range(h - 1):
        d1[i, i], d1[i, i + 1] = 1.0, -1.0
    d2 = torch.zeros(w, w - 1, dtype=torch.float64)
    for j in range(w - 1):
        d2[j, j], d2[j + 1, j] = 1.0, -1.0
    return d1, d2


def test_tv_equals_eq6_with_explicit_matrices_and_gradient_equals_eq7() -> None:
    torch.manual_seed(0)
    a = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    d1, d2 = _difference_matrices(5, 4)
    expected = torch.stack([
        sum(((d1 @ a[n, c]) ** 2).sum() + ((a[n, c] @ d2) ** 2).sum() for c in range(3)) for n in range(2)
    ])
    tv = total_variation(a)
    assert torch.allclose(tv, expected)
    tv.sum().backward()
    eq7 = 2 * (d1.T @ d1 @ a.detach() + a.detach() @ d2 @ d2.T)
    assert torch.allclose(a.grad, eq7)


def test_tv_of_constant_map_is_zero() -> None:
    assert total_variation(torch.full((1, 2, 3, 3), 5.0)).item() == pytest.approx(0.0)
    assert math.isclose(total_variation(torch.tensor([[[[0.0, 1.0]]]])).item(), 1.0)
