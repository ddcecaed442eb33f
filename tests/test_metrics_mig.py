"""MIG, histogram and sampling estimators, on representations whose answer is known."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

from bvae_lib.baselines import IdentityObservations, identity
from bvae_lib.data import DSprites
from bvae_lib.metrics import mig, mig_from_codes, mig_from_posterior


@pytest.fixture(scope="module")
def oracle():
    return IdentityObservations()          # the dSprites grid (3, 6, 40, 32, 32)


def sampled(n=10_000, seed=0):
    ds = IdentityObservations()
    v = ds.sample_factors(n, torch.Generator().manual_seed(seed)).numpy()
    return v, np.random.default_rng(seed).normal(size=(n, 5))


def binned_ratio(size, bins=20):
    """H(binned v)/H(v) for v uniform on 0..size-1 cut into `bins` equal-width bins: the best
    histogram-MIG gap a factor with `size` classes can reach."""
    values = np.arange(size)
    labels = np.digitize(values, np.linspace(0, size - 1, bins + 1)[:-1])
    p = np.bincount(labels) / size
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / math.log(size))


def test_histogram_mig_of_true_factors_is_its_maximum(oracle):
    result = mig(identity, oracle)
    best = np.array([binned_ratio(s) for s in oracle.factor_sizes])
    assert np.allclose(best[:2], 1.0) and np.all(best[2:] < 0.9)    # > 20 classes lose information
    # The plug-in MI of the independent runner-up is biased up by ~(20-1)(|V|-1)/(2n) nats.
    np.testing.assert_allclose(result.gaps, best, atol=0.02)
    assert result.num_points == 10_000 and result.estimator == "histogram"


def test_independent_codes_have_mig_near_zero(oracle):
    g = torch.Generator().manual_seed(0)
    result = mig(lambda v: torch.randn(v.shape[0], 8, generator=g), oracle)
    assert result.score < 0.02


def test_invariant_to_permuting_and_rescaling_dimensions():
    v, noise = sampled()
    codes = v + 0.3 * noise                       # continuous: no value sits on a bin edge
    base = mig_from_codes(codes, v)
    assert 0.3 < base.score < 0.9
    perm = [2, 4, 0, 1, 3]
    moved = mig_from_codes(codes[:, perm] * np.array([4.0, -0.5, 1024.0, -2.0, 0.125]), v)
    np.testing.assert_allclose(moved.gaps, base.gaps, atol=1e-12)
    np.testing.assert_allclose(moved.mutual_info, base.mutual_info[perm], atol=1e-12)


def test_factor_copied_into_two_latents_has_gap_zero(oracle):
    copy_scale = lambda v: torch.cat([v, 2 * v[:, 1:2] + 1], dim=1)   # scale in two latents
    result = mig(copy_scale, oracle)
    reference = mig(identity, oracle)
    assert result.gaps[1] < 1e-12 and reference.gaps[1] > 0.99
    np.testing.assert_allclose(np.delete(result.gaps, 1), np.delete(reference.gaps, 1))


def test_missing_factor_has_gap_zero_and_lowers_mig(oracle):
    drop_y = lambda v: v[:, :4]
    result, reference = mig(drop_y, oracle), mig(identity, oracle)
    assert result.gaps[4] < 0.01
    assert result.score < reference.score - 0.15


def test_histogram_mi_equals_sklearn_mutual_info_score():
    v, noise = sampled(3000, seed=1)
    codes = np.column_stack([v[:, 2] + noise[:, 0], noise[:, 1], v[:, 3] * noise[:, 2]])
    result = mig_from_codes(codes, v, num_bins=20)
    mi = np.zeros((3, 5))
    for j in range(3):
        edges = np.histogram_bin_edges(codes[:, j], bins=20)
        bins = np.digitize(codes[:, j], edges[:-1])
        for k in range(5):
            mi[j, k] = mutual_info_score(v[:, k], bins)
    entropy = np.array([mutual_info_score(v[:, k], v[:, k]) for k in range(5)])
    np.testing.assert_allclose(result.mutual_info, mi, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(result.factor_entropy, entropy, rtol=1e-12)
    top = np.sort(mi, axis=0)
    np.testing.assert_allclose(result.score, np.mean((top[-1] - top[-2]) / entropy), rtol=1e-10)


def posterior(sigma=0.05):
    """q(z|x) with well-separated means: z0 = v0, z1 = v1, z2 = v1 // 2 (a coarse copy), z3 = v2.
    Analytic MIs: I(z0;v0) = log 4, I(z1;v1) = log 6, I(z2;v1) = log 3, I(z3;v2) = log 10, all
    others 0; gaps 1, log 2 / log 6, 1."""
    def rep(v):
        mu = torch.stack([v[:, 0], v[:, 1], torch.div(v[:, 1], 2, rounding_mode="floor"),
                          v[:, 2]], dim=1)
        return mu, torch.full_like(mu, 2 * math.log(sigma))
    return rep


def test_estimators_agree_with_the_analytic_answer():
    grid = IdentityObservations((4, 6, 10))
    analytic = (2 + math.log(2) / math.log(6)) / 3
    sampling = mig(posterior(), grid, estimator="sampling")           # the whole grid, 240 images
    histogram = mig(lambda v: posterior()(v)[0], grid, num_points=5000)
    assert sampling.num_points == 240
    assert abs(sampling.score - analytic) < 0.01
    assert abs(histogram.score - analytic) < 0.01
    expected_mi = np.zeros((4, 3))
    expected_mi[0, 0], expected_mi[1, 1], expected_mi[2, 1], expected_mi[3, 2] = (
        math.log(4), math.log(6), math.log(3), math.log(10))
    np.testing.assert_allclose(sampling.mutual_info, expected_mi, atol=0.02)
    # Sampled codes for the histogram estimator see the same answer at this tiny noise.
    sampled_codes = mig(posterior(), grid, num_points=5000, codes="sample")
    assert abs(sampled_codes.score - analytic) < 0.01


def test_sampling_estimator_chunks_do_not_change_the_answer():
    grid = IdentityObservations((4, 6, 10))
    noisy = posterior(sigma=0.8)                   # overlapping posteriors: a non-trivial answer
    v = grid.factors(torch.arange(len(grid)))
    mu, logvar = noisy(v.float())
    for dtype, rtol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        whole = mig_from_posterior(mu, logvar, v, grid.factor_sizes, num_samples=100, dtype=dtype)
        chunked = mig_from_posterior(mu, logvar, v, grid.factor_sizes, num_samples=100,
                                     chunk_elements=200, dtype=dtype)
        np.testing.assert_allclose(chunked.mutual_info, whole.mutual_info, rtol=rtol)
    assert 0.1 < whole.score < 0.9
    subset = mig(noisy, grid, estimator="sampling", num_points=150)
    assert subset.num_points == 150


def test_float32_densities_agree_with_float64():
    # Posteriors as a trained VAE's: spread codes, sigmas from 0.01 to 1 across dimensions.
    g = torch.Generator().manual_seed(0)
    v = torch.randint(0, 6, (3000, 3), generator=g)
    mu = torch.cat([v.double() / 3 + 0.02 * torch.randn(3000, 3, generator=g, dtype=torch.float64),
                    torch.randn(3000, 2, generator=g, dtype=torch.float64)], dim=1)
    logvar = (torch.tensor([-9.0, -6.0, -3.0, -1.0, 0.0], dtype=torch.float64)
              + 0.3 * torch.randn(3000, 5, generator=g, dtype=torch.float64))
    fast = mig_from_posterior(mu, logvar, v, [6, 6, 6], num_samples=1000)
    exact = mig_from_posterior(mu, logvar, v, [6, 6, 6], num_samples=1000, dtype=torch.float64)
    np.testing.assert_allclose(fast.mutual_info, exact.mutual_info, atol=1e-5)
    assert abs(fast.score - exact.score) < 1e-5 and fast.score > 0.3


def test_underflowing_densities_fall_back_to_the_exact_sum():
    # One posterior e^-60 narrow next to unit ones: in float32 every density of a unit-variance
    # sample underflows against the narrow one's peak, and the exact float64 sum takes over.
    # At e^-150 the narrow posterior is beyond float32's range: float64 throughout.
    v = torch.arange(200)[:, None] % 2
    mu = torch.zeros(200, 1, dtype=torch.float64)
    mu[:, 0] = v[:, 0].double()
    for narrow in (-120.0, -300.0):
        logvar = torch.zeros(200, 1, dtype=torch.float64)
        logvar[0] = narrow
        fast = mig_from_posterior(mu, logvar, v, [2], num_samples=200)
        exact = mig_from_posterior(mu, logvar, v, [2], num_samples=200, dtype=torch.float64)
        assert np.all(np.isfinite(fast.mutual_info))
        np.testing.assert_allclose(fast.mutual_info, exact.mutual_info, atol=1e-6)
    # Samples far out in the tails (15 sigma) underflow in float32 whatever the variances.
    from bvae_lib.metrics._mig_entropy import mixture_entropy as _entropy
    logvar = torch.zeros(200, 1, dtype=torch.float64)
    logvar[0] = -120.0
    far = mu + 15.0
    entropies = [_entropy(far, mu, logvar, torch.arange(200), 50, torch.Generator().manual_seed(0),
                          2**18, dtype) for dtype in (torch.float32, torch.float64)]
    assert torch.isfinite(entropies[0]).all()
    torch.testing.assert_close(entropies[0], entropies[1], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="dtype"):
        mig_from_posterior(mu, logvar, v, [2], dtype=torch.float16)


def test_same_seed_same_score(oracle):
    g = lambda: torch.Generator().manual_seed(0)
    rep = lambda gen: (lambda v: v + 3 * torch.randn(v.shape, generator=gen))
    a = mig(rep(g()), oracle, num_points=2000, seed=5)
    b = mig(rep(g()), oracle, num_points=2000, seed=5)
    c = mig(rep(g()), oracle, num_points=2000, seed=6)
    assert a.score == b.score and np.array_equal(a.mutual_info, b.mutual_info)
    assert a.score != c.score
    grid = IdentityObservations((4, 6, 10))
    s1 = mig(posterior(0.8), grid, estimator="sampling", seed=2)
    s2 = mig(posterior(0.8), grid, estimator="sampling", seed=2)
    assert s1.score == s2.score


def test_dsprites_pca_codes_give_a_valid_mig():
    from bvae_lib.baselines import fit_pca
    ds = DSprites()
    result = mig(fit_pca(ds, num_components=4, num_images=500), ds, num_points=1000)
    assert 0.0 <= result.score <= 1.0 and result.mutual_info.shape == (4, 5)
    assert result.factors == ds.factor_names


def test_bad_inputs_raise_clear_errors(oracle):
    v, noise = sampled(100)
    with pytest.raises(ValueError, match="same length"):
        mig_from_codes(noise[:99], v)
    bad = noise.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        mig_from_codes(bad, v)
    with pytest.raises(ValueError, match="too few"):
        mig_from_codes(noise[:10], v[:10], num_bins=20)
    with pytest.raises(ValueError, match="does not exist"):
        mig(identity, oracle, factors=("shape", "colour"))
    with pytest.raises(ValueError, match="fewer than num_bins"):
        mig(identity, oracle, num_points=10)
    with pytest.raises(TypeError, match="mu, logvar"):
        mig(identity, IdentityObservations((4, 6)), estimator="sampling")
    with pytest.raises(ValueError, match="estimator"):
        mig(identity, oracle, estimator="kde")
    with pytest.raises(TypeError, match="integer"):
        mig_from_codes(noise, v.astype(float))
