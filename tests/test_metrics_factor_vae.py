"""The FactorVAE score on representations whose answer is known, including Kim & Mnih's
criticism of the beta-VAE metric."""

import numpy as np
import pytest
import torch

from bvae_lib.baselines import IdentityObservations, identity
from metric_cases import noisy
from bvae_lib.metrics import beta_vae_score, factor_vae_score, mig

SMALL = dict(num_train=500, num_eval=500, num_variance_estimate=2000)


@pytest.fixture(scope="module")
def oracle():
    return IdentityObservations()


def test_true_factors_score_100_percent(oracle):
    result = factor_vae_score(identity, oracle, **SMALL)
    assert result.score == 1.0 and result.train_accuracy == 1.0
    assert np.array_equal(np.argmax(result.votes, axis=1), np.arange(5))
    assert result.num_images == 64 * 1000 + 2000


def test_independent_codes_score_near_chance(oracle):
    g = torch.Generator().manual_seed(0)
    result = factor_vae_score(lambda v: torch.randn(v.shape[0], 5, generator=g), oracle, **SMALL)
    assert result.eval_accuracy < 0.3           # chance is 1/5; majority votes overfit a little


def test_missing_factor_drops_factor_vae_score_but_not_beta_vae_metric(oracle):
    # Kim & Mnih (2018), Sec. 3: a representation without position_y.
    drop_y = lambda v: v[:, :4]
    everything = dict(factors=None)
    assert beta_vae_score(drop_y, oracle, num_train=300, num_eval=300, **everything).score == 1.0
    fvae = factor_vae_score(drop_y, oracle, **SMALL).score
    assert 0.7 < fvae < 0.85                    # ~4/5: position_y's votes land elsewhere
    assert mig(drop_y, oracle).gaps[4] < 0.01


def test_invariant_to_permuting_and_rescaling_dimensions(oracle):
    base = factor_vae_score(noisy(noise=0.6), oracle, **SMALL).score
    assert 0.4 < base < 0.95
    perm = [3, 0, 4, 2, 1]
    moved = factor_vae_score(noisy(noise=0.6, scale=[1e-3, -50.0, 1e3, 0.2, -7.0], perm=perm),
                             oracle, **SMALL).score
    assert abs(moved - base) <= 0.005


def test_constant_dimension_is_pruned_not_voting(oracle):
    # disentanglement_lib keeps it, and its 0/0 = NaN would win every argmin.
    with_constant = lambda v: torch.cat([torch.zeros(v.shape[0], 1), v], dim=1)
    result = factor_vae_score(with_constant, oracle, **SMALL)
    assert result.score == 1.0 and list(result.active_dims) == [1, 2, 3, 4, 5]
    dead = factor_vae_score(lambda v: torch.zeros(v.shape[0], 3), oracle, **SMALL)
    assert dead.score == 0.0 and dead.active_dims.size == 0


def test_same_seed_same_score(oracle):
    a = factor_vae_score(noisy(noise=0.6), oracle, **SMALL, seed=7)
    b = factor_vae_score(noisy(noise=0.6), oracle, **SMALL, seed=7)
    c = factor_vae_score(noisy(noise=0.6), oracle, **SMALL, seed=8)
    assert a.score == b.score and np.array_equal(a.votes, b.votes)
    assert not np.array_equal(a.votes, c.votes)


def test_bad_inputs_raise_clear_errors(oracle):
    with pytest.raises(ValueError, match="does not exist"):
        factor_vae_score(identity, oracle, factors=("size",), **SMALL)
    with pytest.raises(ValueError, match="NaN"):
        factor_vae_score(lambda v: v / 0 * 0, oracle, **SMALL)
    with pytest.raises(ValueError, match="images_per_vote"):
        factor_vae_score(identity, oracle, images_per_vote=1, **SMALL)
    with pytest.raises(ValueError, match="prune_threshold"):
        factor_vae_score(identity, oracle, prune_threshold=-1.0, **SMALL)


@pytest.mark.parametrize("metric, new_name", [(factor_vae_score, "images_per_vote"),
                                              (beta_vae_score, "pairs_per_point")])
def test_the_old_name_of_L_is_refused_with_its_new_name(oracle, metric, new_name):
    # batch_size is the encoding batch in MIG, DCI and SAP: here it must not pass silently
    with pytest.raises(TypeError, match=f"pass {new_name}=8 .*encode_batch_size"):
        metric(identity, oracle, batch_size=8, num_train=50, num_eval=50)
