"""The objectives against hand-written formulas, and the minibatch estimators of log q(z)
against the exact aggregate posterior of a tiny dataset (N <= 64), where
q(z) = (1/N) sum_n q(z|x_n) can be computed by brute force."""

import math

import pytest
import torch

from bvae_lib.distributions import gaussian_kl, gaussian_log_density, reparameterize
from bvae_lib.objectives import (AnnealedVAEConfig, BetaTCVAEConfig, BetaVAEConfig,
                                 JointVAEConfig, build_objective, estimate_log_qz, exact_log_qz,
                                 kl_decomposition, mss_log_weights, objective_config_from_dict,
                                 objective_config_to_dict)

D = torch.float64
N, d = 64, 3


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def tiny():
    """Posteriors of a tiny dataset: N diagonal Gaussians in d = 3, overlapping enough that
    q(z) is not dominated by one component."""
    g = gen(0)
    mu = torch.randn(N, d, generator=g, dtype=D)
    logvar = 0.3 * torch.randn(N, d, generator=g, dtype=D) - 1.0
    return mu, logvar


def fake_out(m=8, dim=4, seed=0, logits=None):
    g = gen(seed)
    mu = torch.randn(m, dim, generator=g, dtype=D)
    logvar = torch.randn(m, dim, generator=g, dtype=D) * 0.5
    out = dict(recon=torch.randn(m, 1, 64, 64, generator=g, dtype=D), mu=mu, logvar=logvar,
               z=reparameterize(mu, logvar, generator=g))
    if logits is not None:
        out["logits"] = [torch.randn(m, k, generator=g, dtype=D) for k in logits]
    x = (torch.rand(m, 1, 64, 64, generator=g, dtype=D) > 0.7).to(D)
    return out, x


# -- reconstruction, beta-VAE, annealed capacity ---------------------------------------------

def test_beta_one_objective_equals_the_negative_elbo_computed_by_hand():
    out, x = fake_out()
    terms = build_objective(BetaVAEConfig(beta=1.0))(out, x, step=0)
    p = torch.sigmoid(out["recon"])
    log_px = (x * torch.log(p) + (1 - x) * torch.log(1 - p)).flatten(1).sum(1)
    mu, logvar = out["mu"], out["logvar"]
    kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1)
    neg_elbo = (-log_px + kl).mean()
    torch.testing.assert_close(terms["loss"], neg_elbo.float(), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(terms["recon"], (-log_px).mean().float(), rtol=1e-5, atol=1e-3)
    assert terms["kl_per_latent"].shape == (4,)
    torch.testing.assert_close(terms["kl_per_latent"].sum(), terms["kl"])
    assert all(terms[k].dim() == 0 for k in ("loss", "recon", "kl"))


def test_beta_scales_only_the_kl():
    out, x = fake_out()
    t1 = build_objective(BetaVAEConfig(beta=1.0))(out, x, 0)
    t4 = build_objective(BetaVAEConfig(beta=4.0))(out, x, 0)
    torch.testing.assert_close(t4["loss"], t1["recon"] + 4 * t1["kl"])


def test_gaussian_decoder_recon_is_unit_variance_negative_log_likelihood():
    out, x = fake_out()
    terms = build_objective(BetaVAEConfig(), decoder="gaussian")(out, x, 0)
    ref = -torch.distributions.Normal(out["recon"], 1.0).log_prob(x).flatten(1).sum(1).mean()
    torch.testing.assert_close(terms["recon"], ref.float(), rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("bad", [2.0, -0.5])
def test_bernoulli_targets_outside_unit_interval_are_refused(bad):
    out, x = fake_out()
    x = x.clone()
    x[0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match=r"x must have values in \[0, 1\] for a Bernoulli"):
        build_objective(BetaVAEConfig())(out, x, 0)
    build_objective(BetaVAEConfig(), decoder="gaussian")(out, x, 0)   # fine for a Gaussian


def test_targets_of_the_wrong_shape_are_refused():
    out, x = fake_out()
    with pytest.raises(ValueError, match="x must have the decoder output's shape"):
        build_objective(BetaVAEConfig())(out, x[:, :, :32], 0)


def test_annealed_capacity_rises_linearly_then_stays_at_its_max():
    cfg = AnnealedVAEConfig(gamma=1000.0, capacity_max=25.0, capacity_steps=100)
    out, x = fake_out()
    objective = build_objective(cfg)
    caps = [objective(out, x, s)["capacity"].item() for s in (0, 50, 100, 1000)]
    assert caps == pytest.approx([0.0, 12.5, 25.0, 25.0])
    t = objective(out, x, 50)
    torch.testing.assert_close(t["loss"], t["recon"] + 1000.0 * (t["kl"] - 12.5).abs())


# -- the estimators of log q(z) -----------------------------------------------------------------

def test_exact_log_qz_is_the_log_of_the_mixture_of_all_posteriors(tiny):
    mu, logvar = tiny
    z = torch.randn(5, d, generator=gen(1), dtype=D)
    log_qz, log_prod = exact_log_qz(z, mu, logvar)
    dens = gaussian_log_density(z[:, None], mu[None], logvar[None]).exp()      # (5, N, d)
    torch.testing.assert_close(log_qz, dens.prod(2).mean(1).log())
    torch.testing.assert_close(log_prod, dens.mean(1).log().sum(1))


def test_mws_with_the_whole_dataset_is_exact_up_to_its_log_n_constant(tiny):
    # MWS = log[(1/M) sum_j q(z|x_j)] - log N; with the batch equal to the dataset the first
    # term is exactly log q(z), so MWS is low by exactly log N (Chen's constant, documented).
    mu, logvar = tiny
    z = reparameterize(mu, logvar, generator=gen(2))
    exact, exact_prod = exact_log_qz(z, mu, logvar)
    mws, mws_prod = estimate_log_qz(z, mu, logvar, dataset_size=N, estimator="mws")
    torch.testing.assert_close(mws, exact - math.log(N))
    torch.testing.assert_close(mws_prod, exact_prod - d * math.log(N))


def test_mss_with_the_whole_dataset_is_the_stratified_mixture_and_close_to_exact(tiny):
    # Chen's MSS weights with M = N: 1/N on x_i, 1/(N(N-1)) on x_{i+1}, 1/(N-1) on the rest.
    # They are not the uniform 1/N, so MSS is close to, not equal to, the exact value.
    mu, logvar = tiny
    z = reparameterize(mu, logvar, generator=gen(3))
    mss, mss_prod = estimate_log_qz(z, mu, logvar, dataset_size=N, estimator="mss")
    w = torch.full((N, N), 1 / (N - 1), dtype=D)
    i = torch.arange(N)
    w[i, (i + 1) % N] = 1 / (N * (N - 1))
    w[i, i] = 1 / N
    dens = gaussian_log_density(z[:, None], mu[None], logvar[None]).exp()
    torch.testing.assert_close(mss, (w * dens.prod(2)).sum(1).log())
    torch.testing.assert_close(mss_prod, (w[:, :, None] * dens).sum(1).log().sum(1))
    exact, exact_prod = exact_log_qz(z, mu, logvar)
    assert abs((mss - exact).mean()) < 0.02 and abs(((mss - mss_prod) - (exact - exact_prod)).mean()) < 0.02


def test_mss_weights_are_a_mixture_with_total_weight_one_over_n_on_the_own_point():
    for batch, n in [(2, 10), (5, 5), (64, 737_280)]:
        w = mss_log_weights(batch, n, dtype=D).exp()
        torch.testing.assert_close(w.sum(1), torch.ones(batch, dtype=D))
        torch.testing.assert_close(w.diagonal(), torch.full((batch,), 1 / n, dtype=D))


def test_mss_estimate_of_q_z_is_unbiased_over_random_batches(tiny):
    # Fix x_i and z ~ q(z|x_i); draw the other M - 1 points without replacement. The mean of
    # exp(MSS) over batches must equal the exact q(z) (a ratio of 1, within 5 standard errors).
    mu, logvar = tiny
    g = gen(4)
    star, batch, reps = 5, 8, 3000
    z_star = reparameterize(mu[star], logvar[star], generator=g)
    exact = exact_log_qz(z_star[None], mu, logvar)[0]
    others = torch.tensor([n for n in range(N) if n != star])
    ratios = []
    for _ in range(reps):
        idx = torch.cat([torch.tensor([star]), others[torch.randperm(N - 1, generator=g)[:batch - 1]]])
        z = torch.cat([z_star[None], mu[idx[1:]]])          # rows 1.. are irrelevant to row 0
        log_qz, _ = estimate_log_qz(z, mu[idx], logvar[idx], N, "mss")
        ratios.append((log_qz[0] - exact[0]).exp())
    r = torch.stack(ratios)
    assert abs(r.mean() - 1) < 5 * r.std() / math.sqrt(reps), (r.mean(), r.std())


def _batch_errors(mu, logvar, estimator, batch, reps, g):
    """Mean over random batches of (estimate - exact), for log q(z) and for TC."""
    err_q, err_tc = [], []
    for _ in range(reps):
        if estimator == "mss":                       # stratified: without replacement
            idx = torch.randperm(N, generator=g)[:batch]
        else:                                        # MWS: i.i.d. draws from the dataset
            idx = torch.randint(0, N, (batch,), generator=g)
        z = reparameterize(mu[idx], logvar[idx], generator=g)
        exact_q, exact_prod = exact_log_qz(z, mu, logvar)
        q, prod = estimate_log_qz(z, mu[idx], logvar[idx], N, estimator)
        if estimator == "mws":                       # remove Chen's documented constants
            q, prod = q + math.log(N), prod + d * math.log(N)
        err_q.append((q - exact_q).mean())
        err_tc.append(((q - prod) - (exact_q - exact_prod)).mean())
    return torch.stack(err_q), torch.stack(err_tc)


@pytest.mark.parametrize("estimator,batches", [("mws", (4, 16, 64, 256)), ("mss", (4, 16, 64))])
def test_estimates_of_log_qz_and_tc_converge_to_the_exact_values_as_the_batch_grows(
        tiny, estimator, batches):
    mu, logvar = tiny
    g = gen(5)
    rmse_q, rmse_tc = [], []
    for b in batches:
        eq, etc = _batch_errors(mu, logvar, estimator, b, reps=60, g=g)
        rmse_q.append(eq.square().mean().sqrt().item())
        rmse_tc.append(etc.square().mean().sqrt().item())
    assert all(a > b for a, b in zip(rmse_q, rmse_q[1:])), rmse_q
    assert all(a > b for a, b in zip(rmse_tc, rmse_tc[1:])), rmse_tc
    assert rmse_q[-1] < 0.06 and rmse_tc[-1] < 0.06, (rmse_q, rmse_tc)


def test_estimator_arguments_are_checked():
    z = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="estimator"):
        estimate_log_qz(z, z, z, 100, estimator="exact")
    with pytest.raises(ValueError, match="dataset_size"):
        estimate_log_qz(z, z, z, 2, estimator="mss")
    with pytest.raises(ValueError, match="dataset_size"):
        estimate_log_qz(z, z, z, 0)
    with pytest.raises(ValueError, match="latent sizes must match"):
        estimate_log_qz(torch.zeros(4, 2), z, z, 100)


# -- the decomposition --------------------------------------------------------------------------

def test_decomposition_terms_add_up_to_the_batch_kl_for_either_estimator():
    out, _ = fake_out(m=16)
    z, mu, logvar = out["z"], out["mu"], out["logvar"]
    log_qzx = gaussian_log_density(z, mu, logvar).sum(1)
    log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)
    for est in ("mws", "mss"):
        parts = kl_decomposition(z, mu, logvar, *estimate_log_qz(z, mu, logvar, 1000, est))
        torch.testing.assert_close(parts["mi"] + parts["tc"] + parts["dim_kl"],
                                   (log_qzx - log_pz).mean())


def test_exact_decomposition_adds_up_to_the_average_kl_of_the_tiny_dataset(tiny):
    # With the exact q(z), MI + TC + dim-KL averaged over z ~ q(z|x_n) and n is a Monte-Carlo
    # estimate of (1/N) sum_n KL(q(z|x_n) || p(z)), computed here in closed form.
    mu, logvar = tiny
    reps = 200
    g = gen(6)
    z = reparameterize(mu.repeat(reps, 1), logvar.repeat(reps, 1), generator=g)
    mu_r, lv_r = mu.repeat(reps, 1), logvar.repeat(reps, 1)
    log_qz, log_prod = exact_log_qz(z, mu, logvar)
    log_qzx = gaussian_log_density(z, mu_r, lv_r).sum(1)
    log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)
    per_sample = log_qzx - log_pz                            # mi + tc + dim_kl, sample by sample
    parts = kl_decomposition(z, mu_r, lv_r, log_qz, log_prod)
    total = parts["mi"] + parts["tc"] + parts["dim_kl"]
    exact_kl = gaussian_kl(mu, logvar).sum(1).mean()
    se = per_sample.std() / math.sqrt(len(per_sample))
    assert abs(total - exact_kl) < 5 * se, (total, exact_kl, se)
    # each term of the exact decomposition has its known range
    assert 0 < parts["mi"] <= math.log(N) and parts["tc"] > 0 and parts["dim_kl"] > 0


def test_beta_tcvae_with_unit_weights_is_the_vae_with_a_monte_carlo_kl():
    out, x = fake_out(m=16)
    for est in ("mws", "mss"):
        t = build_objective(BetaTCVAEConfig(alpha=1, beta=1, gamma=1, estimator=est,
                                            dataset_size=1000))(out, x, 0)
        torch.testing.assert_close(t["loss"], t["recon"] + t["mi"] + t["tc"] + t["dim_kl"])
        assert all(t[k].dim() == 0 for k in ("mi", "tc", "dim_kl"))
    t6 = build_objective(BetaTCVAEConfig(beta=6.0, dataset_size=1000))(out, x, 0)
    torch.testing.assert_close(t6["loss"], t6["recon"] + t6["mi"] + 6 * t6["tc"] + t6["dim_kl"])


# -- JointVAE -------------------------------------------------------------------------------------

def test_joint_vae_loss_uses_two_capacities_and_clips_the_discrete_one():
    out, x = fake_out(logits=(3, 2))
    cfg = JointVAEConfig(gamma=150.0, cont_capacity_max=40.0, disc_capacity_max=5.0,
                         capacity_steps=1000)
    objective = build_objective(cfg)
    t = objective(out, x, 100)
    probs = [torch.softmax(l, 1) for l in out["logits"]]
    kl_disc = sum((p * p.log()).sum(1).mean() + math.log(p.shape[1]) for p in probs)
    torch.testing.assert_close(t["kl_disc"], kl_disc.float())
    torch.testing.assert_close(t["kl_cont"], gaussian_kl(out["mu"], out["logvar"]).sum(1).mean().float())
    assert t["capacity"].item() == pytest.approx(4.0) and t["capacity_disc"].item() == pytest.approx(0.5)
    torch.testing.assert_close(t["loss"], t["recon"] + 150 * (t["kl_cont"] - 4.0).abs()
                               + 150 * (t["kl_disc"] - 0.5).abs())
    torch.testing.assert_close(t["kl"], t["kl_cont"] + t["kl_disc"])
    late = objective(out, x, 5000)
    assert late["capacity_disc"].item() == pytest.approx(math.log(3) + math.log(2))
    # the logged information: the discrete KL minus the marginal confidence of the batch's mean
    q_bar = [p.mean(0) for p in probs]
    marginal = sum((q * q.log()).sum() + math.log(q.shape[0]) for q in q_bar)
    torch.testing.assert_close(t["info_disc"], (kl_disc - marginal).float())
    assert not t["info_disc"].requires_grad


def test_joint_vae_information_is_zero_for_one_category_for_every_image_and_full_when_balanced():
    out, x = fake_out(m=9, logits=(3,))
    objective = build_objective(JointVAEConfig())
    same = torch.tensor([[9.0, -9.0, -9.0]], dtype=D).expand(9, 3)
    t = objective({**out, "logits": [same]}, x, 0)     # confident, and the same for every image
    assert t["kl_disc"].item() == pytest.approx(math.log(3), abs=1e-3)
    assert t["info_disc"].item() == pytest.approx(0.0, abs=1e-6)
    balanced = torch.eye(3, dtype=D)[torch.arange(9) % 3] * 40.0   # confident, each class 3 times
    t = objective({**out, "logits": [balanced]}, x, 0)
    assert t["info_disc"].item() == pytest.approx(t["kl_disc"].item(), abs=1e-5)
    assert t["info_disc"].item() == pytest.approx(math.log(3), abs=1e-5)


def test_joint_and_plain_objectives_refuse_the_other_kind_of_model():
    plain, x = fake_out()
    joint, _ = fake_out(logits=(3,))
    with pytest.raises(ValueError, match="JointVAE"):
        build_objective(JointVAEConfig())(plain, x, 0)
    with pytest.raises(ValueError, match="categorical"):
        build_objective(BetaVAEConfig())(joint, x, 0)


def test_every_objective_backpropagates_into_a_real_model():
    from bvae_lib.data import DSprites
    from bvae_lib.models import ModelConfig, build_model
    torch.manual_seed(0)
    x, _ = DSprites().sample(8, generator=gen(7))
    configs = [BetaVAEConfig(), AnnealedVAEConfig(), BetaTCVAEConfig(estimator="mws"),
               BetaTCVAEConfig()]
    for cats, cfgs in [((), configs), ((3,), [JointVAEConfig()])]:
        model = build_model(ModelConfig(categorical_dims=cats))
        for cfg in cfgs:
            model.zero_grad()
            t = build_objective(cfg)(model(x), x, 10)
            assert torch.isfinite(t["loss"])
            t["loss"].backward()
            assert all(p.grad is not None for p in model.parameters()), cfg


# -- configs --------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [BetaVAEConfig(beta=2.0), AnnealedVAEConfig(capacity_min=1.0),
                                 BetaTCVAEConfig(estimator="mws", dataset_size=10),
                                 JointVAEConfig(gamma=30.0)])
def test_objective_config_round_trips_through_a_dict(cfg):
    d = objective_config_to_dict(cfg)
    assert d["name"] == type(cfg).name
    assert objective_config_from_dict(d) == cfg
    assert type(build_objective(d).config) is type(cfg)


@pytest.mark.parametrize("make,name", [
    (lambda: BetaVAEConfig(beta=-1.0), "beta"),
    (lambda: AnnealedVAEConfig(gamma=-1.0), "gamma"),
    (lambda: AnnealedVAEConfig(capacity_min=30.0, capacity_max=25.0), "capacities out of order"),
    (lambda: AnnealedVAEConfig(capacity_steps=0), "capacity_steps"),
    (lambda: BetaTCVAEConfig(beta=-2.0), "beta"),
    (lambda: BetaTCVAEConfig(estimator="exact"), "estimator"),
    (lambda: BetaTCVAEConfig(dataset_size=0), "dataset_size"),
    (lambda: JointVAEConfig(disc_capacity_min=2.0, disc_capacity_max=1.0), "capacities out of order"),
    (lambda: JointVAEConfig(cont_capacity_max=-5.0), "cont_capacity_max"),
    (lambda: objective_config_from_dict({"name": "vae_gan"}), "unknown objective name"),
    (lambda: objective_config_from_dict({"name": "beta_vae", "betta": 2}), "unknown fields"),
    (lambda: build_objective(BetaVAEConfig(), decoder="poisson"), "decoder"),
    (lambda: build_objective(BetaVAEConfig())(*fake_out(), step=-1), "step"),
])
def test_bad_objective_arguments_are_refused_naming_the_argument(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_paper_defaults():
    assert BetaVAEConfig().beta == 4.0
    assert (AnnealedVAEConfig().gamma, AnnealedVAEConfig().capacity_max) == (1000.0, 25.0)
    j = JointVAEConfig()
    assert (j.gamma, j.cont_capacity_max, j.disc_capacity_max, j.capacity_steps) == (150.0, 40.0, 1.1, 300_000)
    t = BetaTCVAEConfig()
    assert (t.alpha, t.gamma, t.estimator, t.dataset_size) == (1.0, 1.0, "mss", 737_280)
