"""Each formula in bvae_lib.distributions against an independent reference: torch.distributions,
a Monte-Carlo estimate inside its error bars, a chi-square test, or a numerical integral."""

import math

import pytest
import torch
from scipy import stats

from bvae_lib.distributions import (categorical_kl_split, categorical_kl_uniform,
                                    concrete_log_density, gaussian_kl,
                                    gaussian_log_density, gumbel_max_sample,
                                    gumbel_softmax_sample, reparameterize, sample_gumbel)

D = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- Gaussians ---------------------------------------------------------------------------------

def test_gaussian_log_density_equals_torch_normal():
    g = gen()
    z, mu = torch.randn(5, 4, generator=g, dtype=D), torch.randn(5, 4, generator=g, dtype=D)
    logvar = torch.randn(5, 4, generator=g, dtype=D)
    ref = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z)
    torch.testing.assert_close(gaussian_log_density(z, mu, logvar), ref, rtol=0, atol=1e-12)


def test_gaussian_kl_equals_torch_kl_per_dimension():
    g = gen(1)
    mu, logvar = torch.randn(6, 3, generator=g, dtype=D), 2 * torch.randn(6, 3, generator=g, dtype=D)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    kl = gaussian_kl(mu, logvar)
    assert kl.shape == mu.shape
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(q, p), rtol=0, atol=1e-12)
    assert torch.all(gaussian_kl(torch.zeros(3), torch.zeros(3)) == 0)


def test_gaussian_kl_matches_monte_carlo_within_five_standard_errors():
    g = gen(2)
    mu = torch.tensor([0.0, 1.5, -0.7], dtype=D)
    logvar = torch.tensor([0.0, -1.0, 0.8], dtype=D)
    n = 200_000
    z = reparameterize(mu.expand(n, 3), logvar.expand(n, 3), generator=g)
    zeros = torch.zeros_like(z)
    log_ratio = gaussian_log_density(z, mu, logvar) - gaussian_log_density(z, zeros, zeros)
    est, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(n)
    exact = gaussian_kl(mu, logvar)
    assert torch.all((est - exact).abs() < 5 * se + 1e-12), (est, exact, se)


def test_reparameterize_has_the_right_moments_and_passes_gradients():
    mu = torch.tensor([0.5, -2.0], dtype=D, requires_grad=True)
    logvar = torch.tensor([0.0, -2.0], dtype=D, requires_grad=True)
    n = 100_000
    z = reparameterize(mu.expand(n, 2), logvar.expand(n, 2), generator=gen(3))
    std = torch.exp(0.5 * logvar.detach())
    assert torch.all((z.mean(0) - mu.detach()).abs() < 5 * std / math.sqrt(n))
    # the sample variance has standard error ~ sigma^2 sqrt(2 / n)
    assert torch.all((z.var(0) - std ** 2).abs() < 5 * std ** 2 * math.sqrt(2 / n))
    z.sum().backward()
    assert torch.allclose(mu.grad, torch.full_like(mu, n))
    assert torch.all(logvar.grad.abs() > 0)


def test_reparameterize_is_reproducible_with_a_generator():
    mu, logvar = torch.zeros(4, 3), torch.zeros(4, 3)
    a = reparameterize(mu, logvar, generator=gen(7))
    b = reparameterize(mu, logvar, generator=gen(7))
    assert torch.equal(a, b)


# -- Gumbel ------------------------------------------------------------------------------------

def test_sample_gumbel_follows_the_standard_gumbel_distribution():
    g = sample_gumbel((50_000,), generator=gen(4), dtype=D)
    assert torch.isfinite(g).all()
    assert stats.kstest(g.numpy(), stats.gumbel_r.cdf).pvalue > 1e-3
    # power check: the same test rejects a shifted Gumbel, so it can fail
    assert stats.kstest(g.numpy() + 0.05, stats.gumbel_r.cdf).pvalue < 1e-3


def test_sample_gumbel_is_finite_when_the_uniform_draw_is_zero(monkeypatch):
    # torch.rand may return exactly 0, where -log(-log u) = -inf: force it and check the clamp
    monkeypatch.setattr(torch, "rand", lambda shape, **kw: torch.zeros(shape, dtype=kw.get("dtype")))
    g = sample_gumbel((3,))
    assert torch.isfinite(g).all()
    assert torch.allclose(g, torch.full((3,), -math.log(-math.log(1e-20))))


def _chi_square_pvalue(samples: torch.Tensor, probs: torch.Tensor) -> float:
    counts = torch.bincount(samples.reshape(-1), minlength=len(probs)).double()
    return stats.chisquare(counts.numpy(), (probs * counts.sum()).numpy()).pvalue


def test_gumbel_max_frequencies_pass_a_chi_square_test():
    probs = torch.tensor([0.05, 0.15, 0.3, 0.5], dtype=D)
    logits = torch.log(probs) + 3.0                      # unnormalised logits are fine
    s = gumbel_max_sample(logits.expand(40_000, 4), generator=gen(6))
    assert s.dtype == torch.long and s.shape == (40_000,)
    assert _chi_square_pvalue(s, probs) > 1e-3
    # power check: the same counts are rejected against slightly different probabilities
    assert _chi_square_pvalue(s, torch.tensor([0.07, 0.13, 0.3, 0.5], dtype=D)) < 1e-3


def test_gumbel_softmax_lies_on_the_simplex_and_shares_the_gumbel_max_argmax():
    logits = torch.randn(1000, 5, generator=gen(8), dtype=D)
    y = gumbel_softmax_sample(logits, tau=0.67, generator=gen(9))
    assert torch.all(y >= 0) and torch.allclose(y.sum(-1), torch.ones(1000, dtype=D))
    # same noise -> same argmax as the exact Gumbel-max sampler, at any temperature
    assert torch.equal(y.argmax(-1), gumbel_max_sample(logits, generator=gen(9)))
    cold = gumbel_softmax_sample(logits, tau=0.01, generator=gen(9))
    assert (cold.max(-1).values > 0.99).float().mean() > 0.95


def test_hard_gumbel_softmax_is_one_hot_with_straight_through_gradient():
    logits = torch.randn(64, 3, generator=gen(10), requires_grad=True)
    y = gumbel_softmax_sample(logits, tau=0.5, hard=True, generator=gen(11))
    assert torch.all((y == 0) | (y == 1)) and torch.all(y.sum(-1) == 1)
    (y * torch.arange(3.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan")])
def test_non_positive_temperature_is_refused_naming_tau(tau):
    with pytest.raises(ValueError, match="tau"):
        gumbel_softmax_sample(torch.zeros(2, 3), tau=tau)
    with pytest.raises(ValueError, match="tau"):
        concrete_log_density(torch.full((3,), 1 / 3), torch.zeros(3), tau=tau)


# -- Concrete density ------------------------------------------------------------------------

@pytest.mark.parametrize("tau", [0.67, 1.5])
def test_concrete_density_integrates_to_one_with_two_categories(tau):
    # y = (t, 1 - t); integrate over s = logit(t), where dt = t (1 - t) ds and the tails decay
    s = torch.linspace(-80, 80, 200_001, dtype=D)
    log_y = torch.log_softmax(torch.stack([s, torch.zeros_like(s)], dim=-1), dim=-1)
    logits = torch.tensor([0.3, -0.9], dtype=D)
    integrand = torch.exp(concrete_log_density(log_y.exp(), logits, tau) + log_y.sum(-1))
    assert abs(torch.trapezoid(integrand, s).item() - 1) < 1e-6


@pytest.mark.parametrize("tau", [0.67, 1.5])
def test_concrete_density_integrates_to_one_with_three_categories(tau):
    # additive-logistic coordinates y = softmax(s1, s2, 0): |d(y1, y2) / d(s1, s2)| = y1 y2 y3
    s = torch.linspace(-40, 40, 1201, dtype=D)
    s1, s2 = torch.meshgrid(s, s, indexing="ij")
    log_y = torch.log_softmax(torch.stack([s1, s2, torch.zeros_like(s1)], -1), -1)
    logits = torch.tensor([0.5, -0.2, 0.1], dtype=D)
    integrand = torch.exp(concrete_log_density(log_y.exp(), logits, tau) + log_y.sum(-1))
    total = torch.trapezoid(torch.trapezoid(integrand, s, dim=1), s)
    assert abs(total.item() - 1) < 1e-3


def test_concrete_density_matches_a_histogram_of_gumbel_softmax_samples():
    tau, logits = 0.67, torch.tensor([0.4, -0.4], dtype=D)
    n = 100_000
    y = gumbel_softmax_sample(logits.expand(n, 2), tau, generator=gen(12))
    # 20 bins equally spaced in logit(y_1); expected mass of each bin by integrating the density
    edges = torch.linspace(-8, 8, 21, dtype=D)
    s = torch.logit(y[:, 0].clamp(1e-15, 1 - 1e-15))
    counts = torch.histc(s, bins=20, min=-8, max=8).double()
    expected = []
    for a, b in zip(edges[:-1], edges[1:]):
        grid = torch.linspace(a, b, 2001, dtype=D)
        t = torch.sigmoid(grid)
        f = torch.exp(concrete_log_density(torch.stack([t, 1 - t], -1), logits, tau)
                      + torch.log(t) + torch.log1p(-t))
        expected.append(torch.trapezoid(f, grid).item())
    expected = torch.tensor(expected, dtype=D) * n
    keep = expected > 20                                  # chi-square needs non-tiny cells
    chi2 = (((counts - expected) ** 2) / expected)[keep].sum().item()
    assert stats.chi2.sf(chi2, int(keep.sum()) - 1) > 1e-3
    # power check: a different temperature's density is rejected by the same histogram
    wrong = []
    for a, b in zip(edges[:-1], edges[1:]):
        grid = torch.linspace(a, b, 2001, dtype=D)
        t = torch.sigmoid(grid)
        f = torch.exp(concrete_log_density(torch.stack([t, 1 - t], -1), logits, 0.8)
                      + torch.log(t) + torch.log1p(-t))
        wrong.append(torch.trapezoid(f, grid).item())
    wrong = torch.tensor(wrong, dtype=D) * n
    chi2_wrong = (((counts - wrong) ** 2) / wrong)[keep].sum().item()
    assert stats.chi2.sf(chi2_wrong, int(keep.sum()) - 1) < 1e-3


def test_concrete_density_ignores_a_constant_added_to_the_logits():
    y = torch.tensor([[0.2, 0.5, 0.3]], dtype=D)
    logits = torch.tensor([0.1, 0.7, -0.3], dtype=D)
    torch.testing.assert_close(concrete_log_density(y, logits, 0.5),
                               concrete_log_density(y, logits + 4.2, 0.5))


# -- Categorical KL ----------------------------------------------------------------------------

def test_categorical_kl_uniform_equals_torch_kl_and_its_bounds():
    probs = torch.softmax(torch.randn(7, 4, generator=gen(13), dtype=D), -1)
    ref = torch.distributions.kl_divergence(torch.distributions.Categorical(probs),
                                            torch.distributions.Categorical(torch.full((4,), 0.25, dtype=D)))
    kl = categorical_kl_uniform(probs)
    assert kl.shape == (7,)
    torch.testing.assert_close(kl, ref)
    assert categorical_kl_uniform(torch.full((3,), 1 / 3)).abs() < 1e-6
    torch.testing.assert_close(categorical_kl_uniform(torch.tensor([0.0, 1.0, 0.0], dtype=D)),
                               torch.tensor(math.log(3), dtype=D))


def test_categorical_kl_split_is_the_information_plus_the_marginal_confidence():
    probs = torch.softmax(torch.randn(9, 3, generator=gen(14), dtype=D), -1)
    info, marginal = categorical_kl_split(probs)
    Cat = torch.distributions.Categorical
    q_bar = probs.mean(0)
    ref_info = torch.distributions.kl_divergence(Cat(probs), Cat(q_bar.expand(9, 3))).mean()
    torch.testing.assert_close(info, ref_info)                     # E_n KL(q(c|x_n) || q_bar)
    torch.testing.assert_close(marginal, categorical_kl_uniform(q_bar))
    torch.testing.assert_close(info + marginal, categorical_kl_uniform(probs).mean())
