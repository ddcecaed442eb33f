"""FactorVAE: the permutation, the density-ratio estimate of TC against a Gaussian's exact TC,
training with a discriminator of its own, and bitwise resume with it."""

import math

import pytest
import torch
import torch.nn.functional as F

from bvae_lib import checkpoint
from bvae_lib.data import DSprites
from bvae_lib.models import ModelConfig
from bvae_lib.objectives import (FactorDiscriminator, FactorVAEConfig, build_objective,
                                 density_ratio_tc, objective_config_from_dict,
                                 objective_config_to_dict, permute_dims)
from bvae_lib.train import TrainConfig, train

MODEL = ModelConfig(latent_dim=4)
SMALL = FactorVAEConfig(gamma=10.0, disc_hidden=32, disc_layers=2)


def test_permute_dims_keeps_each_column_and_breaks_the_rows():
    z = torch.arange(40.0).reshape(10, 4)
    p = permute_dims(z, torch.Generator().manual_seed(0))
    for j in range(4):                 # every marginal q(z_j) is unchanged ...
        assert torch.equal(p[:, j].sort().values, z[:, j])
    assert not torch.equal(p, z)       # ... and the columns no longer travel together
    assert torch.equal(p, permute_dims(z, torch.Generator().manual_seed(0)))


def _trained_tc(rho: float, steps: int = 1500) -> float:
    torch.manual_seed(0)
    chol = torch.linalg.cholesky(torch.tensor([[1.0, rho], [rho, 1.0]]))
    disc = FactorDiscriminator(2, hidden=64, layers=2)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3)
    labels = torch.cat([torch.zeros(256, dtype=torch.long), torch.ones(256, dtype=torch.long)])
    for _ in range(steps):
        z = torch.randn(256, 2) @ chol.T
        loss = F.cross_entropy(disc(torch.cat([z, permute_dims(z)])), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(density_ratio_tc(disc(torch.randn(20_000, 2) @ chol.T)))


@pytest.mark.parametrize("rho", [0.0, 0.8])
def test_density_ratio_estimates_the_exact_tc_of_a_gaussian(rho):
    # TC of a bivariate Gaussian with correlation rho: -log(1 - rho^2) / 2 nats (0.511 at 0.8).
    # A discriminator of 2 x 64 units, 1,500 Adam steps: within 0.1 nats (20%) of it.
    exact = -0.5 * math.log(1 - rho ** 2)
    assert abs(_trained_tc(rho) - exact) < 0.1


def test_factor_vae_config_round_trips_and_checks():
    cfg = objective_config_from_dict(objective_config_to_dict(SMALL))
    assert cfg == SMALL
    with pytest.raises(ValueError, match="disc_beta1"):
        FactorVAEConfig(disc_beta1=1.5)
    obj = build_objective(SMALL)
    with pytest.raises(ValueError, match="bind"):
        obj.state_dict()


def test_factor_vae_trains_its_discriminator_and_records_tc():
    result = train(MODEL, SMALL, DSprites(), TrainConfig(steps=6, batch_size=16, log_every=2,
                                                         progress=False, device="cpu"))
    h = result.history
    for key in ("tc", "disc_loss", "disc_accuracy"):
        assert len(h[key]) == 3, key
    assert abs(h["disc_loss"][0] - math.log(2)) < 0.1     # an untrained D: chance, log 2 nats
    assert h["loss"][-1] < h["loss"][0]


@pytest.mark.parametrize("amp", [False, None], ids=["fp32", "default"])
def test_factor_vae_resumes_bitwise_with_its_discriminator(tmp_path, amp,
                                                         interrupted_and_straight):
    interrupted_and_straight(MODEL, SMALL, amp, batch_size=8)
    a = checkpoint.load_checkpoint(tmp_path / "a")["objective_state"]
    b = checkpoint.load_checkpoint(tmp_path / "b")["objective_state"]
    for k, v in a["discriminator"].items():
        assert torch.equal(v, b["discriminator"][k]), k
