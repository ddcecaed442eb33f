"""The beta-VAE metric on representations whose answer is known."""

import numpy as np
import pytest
import torch

from bvae_lib.baselines import IdentityObservations, identity
from metric_cases import noisy
from bvae_lib.data import DSprites
from bvae_lib.metrics import HIGGINS_FACTORS, beta_vae_score

SMALL = dict(num_train=300, num_eval=300)     # 600 points x 64 pairs: fast on the oracle data


@pytest.fixture(scope="module")
def oracle():
    return IdentityObservations()             # the dSprites grid; observations = factors


def test_true_factors_score_100_percent(oracle):
    result = beta_vae_score(identity, oracle, **SMALL)
    assert result.score == 1.0 and result.train_accuracy == 1.0
    assert result.factors == HIGGINS_FACTORS
    assert result.num_images == 2 * 64 * 600
    assert result.confusion.sum() == 300 and np.all(np.diag(result.confusion) > 0)
    assert beta_vae_score(identity, oracle, factors=None, **SMALL).score == 1.0


def test_independent_codes_score_at_chance(oracle):
    g = torch.Generator().manual_seed(0)
    noise = lambda v: torch.randn(v.shape[0], 6, generator=g)
    result = beta_vae_score(noise, oracle, num_train=500, num_eval=1000)
    assert abs(result.eval_accuracy - 1 / 4) < 0.06     # 4 Higgins factors


def test_invariant_to_permuting_and_rescaling_dimensions(oracle):
    base = beta_vae_score(noisy(), oracle, **SMALL).score
    assert 0.4 < base < 0.95                              # informative but not perfect
    perm = [3, 0, 4, 2, 1]
    scale = [1e-3, -50.0, 1e3, 0.2, -7.0]
    moved = beta_vae_score(noisy(scale=scale, perm=perm), oracle, **SMALL).score
    assert abs(moved - base) <= 0.01


def test_missing_factor_still_scores_100_percent(oracle):
    # Kim & Mnih's criticism: ignore position_y entirely, still 100%.
    drop_y = lambda v: v[:, :4]
    assert beta_vae_score(drop_y, oracle, **SMALL).score == 1.0


def test_same_seed_same_score_and_seed_matters(oracle):
    a = beta_vae_score(noisy(), oracle, num_train=100, num_eval=100, seed=3)
    b = beta_vae_score(noisy(), oracle, num_train=100, num_eval=100, seed=3)
    c = beta_vae_score(noisy(), oracle, num_train=100, num_eval=100, seed=4)
    assert a.score == b.score and np.array_equal(a.confusion, b.confusion)
    assert not np.array_equal(a.confusion, c.confusion)


def test_encoding_batch_size_does_not_change_the_sample(oracle):
    # A deterministic, partly informative representation: a fixed linear mix of the factors.
    mix = torch.randn(5, 5, generator=torch.Generator().manual_seed(0))
    rep = lambda v: v @ mix
    a = beta_vae_score(rep, oracle, num_train=100, num_eval=100, encode_batch_size=256)
    b = beta_vae_score(rep, oracle, num_train=100, num_eval=100, encode_batch_size=97)
    assert a.score == b.score and np.array_equal(a.confusion, b.confusion)


def test_dsprites_images_centroid_codes_capture_position_and_scale():
    # A hand-made representation of real images: area and centre of mass. It captures scale
    # and both positions but not orientation, so the metric lands well above chance (0.25).
    def centroid(x):
        w = x.flatten(1)
        mass = w.sum(1, keepdim=True)
        grid = torch.arange(64.0)
        cy = (x.sum(3).squeeze(1) * grid).sum(1, keepdim=True) / mass
        cx = (x.sum(2).squeeze(1) * grid).sum(1, keepdim=True) / mass
        return torch.cat([mass, cx, cy], 1)
    result = beta_vae_score(centroid, DSprites(), pairs_per_point=8, num_train=150, num_eval=150)
    assert result.score > 0.6


def test_bad_inputs_raise_clear_errors(oracle):
    with pytest.raises(ValueError, match="does not exist"):
        beta_vae_score(identity, oracle, factors=("colour", "scale"), **SMALL)
    with pytest.raises(ValueError, match="at least 2 factors"):
        beta_vae_score(identity, oracle, factors=("scale",), **SMALL)
    with pytest.raises(ValueError, match="NaN"):
        beta_vae_score(lambda v: v * float("nan"), oracle, **SMALL)
    with pytest.raises(ValueError, match="shape"):
        beta_vae_score(lambda v: v[:3], oracle, **SMALL)
    with pytest.raises(ValueError, match="num_train"):
        beta_vae_score(identity, oracle, num_train=0)
    with pytest.raises(TypeError, match="tuple"):
        beta_vae_score(lambda v: (v, v), oracle, **SMALL)
