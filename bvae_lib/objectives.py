"""Objectives: beta-VAE, capacity-annealed beta-VAE, beta-TCVAE, JointVAE, FactorVAE and
Dual-Swap Disentangling.

Each objective is a small config dataclass (the paper's defaults, a ``name`` used to save it)
and a callable built from it::

    objective = build_objective(BetaVAEConfig(beta=4.0), decoder="bernoulli")
    terms = objective(model(x), x, step)       # dict of 0-dim tensors (+ kl_per_latent)
    terms["loss"].backward()

Every objective returns its named terms, not only the total: ``loss``, ``recon`` (-log p(x|z)
summed over pixels, mean over the batch), ``kl`` (KL(q(z|x) || p(z)) summed over latents, mean
over the batch), ``kl_per_latent`` (d,), and where they exist ``mi``, ``tc``, ``dim_kl``
(Chen et al. 2018's decomposition), ``capacity``, ``kl_cont``, ``kl_disc``.

The reconstruction term depends on the decoder: Bernoulli (the model outputs logits; binary
cross-entropy with logits, summed over pixels) or Gaussian with *fixed unit variance* (the model
outputs means; -log N(x; mean, 1) = 1/2 (x - mean)^2 + 1/2 log 2 pi a pixel). A learned or
smaller variance would change the balance between reconstruction and KL; unit variance is the
simplest choice and the one we use for CelebA. Pass the model's decoder to :func:`build_objective`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .distributions import (LOG_2PI, categorical_kl_split, categorical_kl_uniform,
                            gaussian_kl, gaussian_log_density)
from ._validate import is_int

__all__ = [
    "BetaVAEConfig", "AnnealedVAEConfig", "BetaTCVAEConfig", "JointVAEConfig", "FactorVAEConfig",
    "DualSwapConfig", "DualSwapLoss", "swap_parts",
    "Objective", "BetaVAELoss", "AnnealedVAELoss", "BetaTCVAELoss", "JointVAELoss",
    "FactorVAELoss", "FactorDiscriminator", "permute_dims", "density_ratio_tc",
    "build_objective", "objective_config_to_dict", "objective_config_from_dict",
    "reconstruction_loss", "linear_capacity", "estimate_log_qz", "exact_log_qz",
    "mss_log_weights", "kl_decomposition", "DSPRITES_SIZE",
]

DSPRITES_SIZE = 737_280     # N for dSprites: 3 * 6 * 40 * 32 * 32 images


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------

def _check_nonneg(name: str, value, hint: str = "") -> None:
    if not (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, bool) and float(value) >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}{hint}")


def _check_positive_int(name: str, value) -> None:
    if not (is_int(value) and value > 0):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_capacities(lo_name: str, lo, hi_name: str, hi) -> None:
    _check_nonneg(lo_name, lo, " (capacities are in nats)")
    _check_nonneg(hi_name, hi, " (capacities are in nats)")
    if lo > hi:
        raise ValueError(f"capacities out of order: {lo_name}={lo} must be <= {hi_name}={hi}; "
                         f"the capacity rises from its min to its max during training")


@dataclass
class BetaVAEConfig:
    """beta-VAE (Higgins et al. 2017): recon + beta * KL. beta = 1 is the VAE's negative ELBO.

    beta = 4 is Higgins et al.'s value for dSprites with 10 latents (Appendix A, Table 1)."""

    name: ClassVar[str] = "beta_vae"
    beta: float = 4.0

    def __post_init__(self):
        _check_nonneg("beta", self.beta, "; beta = 1 is the plain VAE, beta > 1 the beta-VAE")


@dataclass
class AnnealedVAEConfig:
    """Capacity-annealed beta-VAE (Burgess et al. 2018): ``recon + gamma * |KL - C(t)|``, with C
    rising linearly from ``capacity_min`` to ``capacity_max`` nats over ``capacity_steps`` steps.

    dSprites defaults gamma = 1000 and C_max = 25 nats are Burgess et al.'s dSprites values; the
    100,000-step ramp is the value disentanglement_lib uses (``annealed_vae.iteration_threshold``,
    with ``c_max = 25``, ``gamma = 1000``); we could not check the ramp length in the paper text.
    ``capacity_min`` (0 in the paper) is ours, to start from a non-zero capacity."""

    name: ClassVar[str] = "annealed_vae"
    gamma: float = 1000.0
    capacity_max: float = 25.0
    capacity_steps: int = 100_000
    capacity_min: float = 0.0

    def __post_init__(self):
        _check_nonneg("gamma", self.gamma)
        _check_capacities("capacity_min", self.capacity_min, "capacity_max", self.capacity_max)
        _check_positive_int("capacity_steps", self.capacity_steps)


@dataclass
class BetaTCVAEConfig:
    """beta-TCVAE (Chen et al. 2018): recon + alpha * MI + beta * TC + gamma * dim-KL.

    alpha = gamma = 1 as in Chen et al.'s experiments (only beta is tuned). beta = 6 is this
    project's choice for dSprites (the shared contract); Chen et al. sweep beta and we could not
    verify a single recommended dSprites value in the paper. ``estimator`` picks how log q(z) is estimated from
    a minibatch ("mws" or "mss", see :func:`estimate_log_qz`); ``dataset_size`` is N, which the
    estimators need (737,280 for dSprites)."""

    name: ClassVar[str] = "beta_tcvae"
    alpha: float = 1.0
    beta: float = 6.0
    gamma: float = 1.0
    estimator: str = "mss"
    dataset_size: int = DSPRITES_SIZE

    def __post_init__(self):
        for n in ("alpha", "beta", "gamma"):
            _check_nonneg(n, getattr(self, n))
        if self.estimator not in _ESTIMATORS:
            raise ValueError(f"estimator must be one of {_ESTIMATORS}, got {self.estimator!r}")
        _check_positive_int("dataset_size", self.dataset_size)


@dataclass
class JointVAEConfig:
    """JointVAE (Dupont 2018): ``recon + gamma |KL_cont - C_cont(t)| + gamma |KL_disc - C_disc(t)|``.

    Both capacities rise linearly over ``capacity_steps`` steps; the discrete one is clipped at
    sum_i log k_i, the largest KL a set of categoricals can have to the uniform prior.
    Defaults are Dupont's dSprites run, as shipped with his code
    (github.com/Schlumberger/joint-vae, ``trained_models/dsprites/specs.json``):
    ``cont_capacity = [0, 40, 300000, 150]`` and ``disc_capacity = [0, 1.1, 300000, 150]``
    (min, max, iterations, gamma), with 6 continuous latents and one 3-way categorical
    (log 3 = 1.0986 < 1.1, so the discrete capacity ends at the clip). His README example
    (MNIST-like data) uses C 0 -> 5 nats over 25,000 steps with gamma = 30."""

    name: ClassVar[str] = "joint_vae"
    gamma: float = 150.0
    cont_capacity_max: float = 40.0
    disc_capacity_max: float = 1.1
    capacity_steps: int = 300_000
    cont_capacity_min: float = 0.0
    disc_capacity_min: float = 0.0

    def __post_init__(self):
        _check_nonneg("gamma", self.gamma)
        _check_capacities("cont_capacity_min", self.cont_capacity_min,
                          "cont_capacity_max", self.cont_capacity_max)
        _check_capacities("disc_capacity_min", self.disc_capacity_min,
                          "disc_capacity_max", self.disc_capacity_max)
        _check_positive_int("capacity_steps", self.capacity_steps)


@dataclass
class FactorVAEConfig:
    """FactorVAE (Kim & Mnih 2018): ``recon + KL + gamma * TC``, with the total correlation
    TC = KL(q(z) || prod_j q(z_j)) estimated by a discriminator D (the density-ratio trick):
    TC ~ E_q(z)[log D(z) / (1 - D(z))], D trained to tell codes of the batch from codes whose
    dimensions were permuted independently across the batch (samples of prod_j q(z_j)).

    The discriminator and its optimiser follow the paper's dSprites setup as disentanglement_lib
    implements it (``fc_discriminator``: 6 hidden layers of 1000 units with leaky ReLU (slope
    0.2), 2 logits; Adam with lr 1e-4 and betas (0.5, 0.9)). gamma = 10 is the smallest value of
    the sweep {10, 20, 30, 40, 50, 100} of Kim & Mnih's dSprites experiments and of Locatello et
    al. 2019 (disentanglement_lib's ``factor_vae.gamma``); we could not check a single
    recommended dSprites value in the paper's text."""

    name: ClassVar[str] = "factor_vae"
    gamma: float = 10.0
    disc_hidden: int = 1000
    disc_layers: int = 6
    disc_lr: float = 1e-4
    disc_beta1: float = 0.5
    disc_beta2: float = 0.9

    def __post_init__(self):
        _check_nonneg("gamma", self.gamma)
        _check_positive_int("disc_hidden", self.disc_hidden)
        _check_positive_int("disc_layers", self.disc_layers)
        if not (isinstance(self.disc_lr, (int, float)) and math.isfinite(self.disc_lr)
                and self.disc_lr > 0):
            raise ValueError(f"disc_lr must be a positive number, got {self.disc_lr!r}")
        for n in ("disc_beta1", "disc_beta2"):
            v = getattr(self, n)
            if not (isinstance(v, (int, float)) and 0 <= v < 1):
                raise ValueError(f"{n} must be in [0, 1) (an Adam beta), got {v!r}")


@dataclass
class DualSwapConfig:
    """Dual-Swap Disentangling (Feng et al. 2018): an autoencoder whose code is cut into one part
    of ``part_size`` dimensions per factor of a ground-truth dataset, trained on *pairs* of
    images. A share ``supervision`` of the pairs is labelled -- the two images share one known
    factor k -- and asks that swapping part k between their codes changes nothing; the other
    pairs are unlabelled and ask that swapping a part twice (encode, swap, decode, encode the two
    hybrids, swap back, decode) gives the originals back. The loss is ``labelled_weight`` times
    the summed reconstruction error of the labelled pairs plus ``unlabelled_weight`` times that
    of the unlabelled ones, divided by the number of pairs. See :class:`DualSwapLoss`."""

    name: ClassVar[str] = "dual_swap"
    part_size: int = 2
    supervision: float = 0.1
    labelled_weight: float = 1.0
    unlabelled_weight: float = 1.0

    def __post_init__(self):
        _check_positive_int("part_size", self.part_size)
        if not (isinstance(self.supervision, (int, float)) and not isinstance(self.supervision, bool)
                and 0 <= self.supervision <= 1):
            raise ValueError(f"supervision must be a share of the pairs in [0, 1] (0.1 = one "
                             f"labelled pair in ten), got {self.supervision!r}")
        _check_nonneg("labelled_weight", self.labelled_weight)
        _check_nonneg("unlabelled_weight", self.unlabelled_weight)


_ESTIMATORS = ("mws", "mss")
_CONFIGS = {c.name: c for c in (BetaVAEConfig, AnnealedVAEConfig, BetaTCVAEConfig, JointVAEConfig,
                                FactorVAEConfig, DualSwapConfig)}


def objective_config_to_dict(config) -> dict:
    """``{"name": ..., **fields}``: what a checkpoint stores (inverse of the function below)."""
    if type(config) not in _CONFIGS.values():
        raise TypeError(f"config must be one of {[c.__name__ for c in _CONFIGS.values()]}, got "
                        f"{type(config).__name__}")
    return {"name": config.name, **asdict(config)}


def objective_config_from_dict(d: dict):
    """Rebuild an objective config from :func:`objective_config_to_dict`'s output."""
    if not isinstance(d, dict) or "name" not in d:
        raise ValueError(f"expected a dict with a 'name' key (one of {sorted(_CONFIGS)}), got {d!r}")
    d = dict(d)
    name = d.pop("name")
    if name not in _CONFIGS:
        raise ValueError(f"unknown objective name {name!r}; expected one of {sorted(_CONFIGS)}")
    cls = _CONFIGS[name]
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)} for {cls.__name__}; it has "
                         f"{[f.name for f in fields(cls)]}")
    return cls(**d)


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------

def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor,
                        decoder: str = "bernoulli", check_range: bool = True) -> torch.Tensor:
    """-log p(x|z), summed over pixels, mean over the batch (a 0-dim tensor).

    ``recon`` is the decoder's output: Bernoulli logits, or the means of a Gaussian with unit
    variance. Bernoulli targets must lie in [0, 1] (binary images, or grey levels read as
    probabilities); one min/max on the batch checks it. That check reads two numbers back from
    the device; the training loop checks its dataset once instead and passes
    ``check_range=False`` (through ``Objective.check_range``), so a GPU is not waited for.
    """
    if recon.shape != x.shape:
        raise ValueError(f"x must have the decoder output's shape {tuple(recon.shape)}, got "
                         f"{tuple(x.shape)}")
    m = x.shape[0]
    if m == 0 or x.numel() == 0:
        raise ValueError(f"x is an empty batch (shape {tuple(x.shape)}); the loss is a mean over "
                         f"the batch and needs at least one image")
    recon = recon.float()
    x = x.float()
    if decoder == "bernoulli" and check_range:
        lo, hi = torch.aminmax(x.detach())
        if not (lo >= 0 and hi <= 1):       # written so that NaN (all comparisons false) fails
            raise ValueError(f"x must have values in [0, 1] for a Bernoulli decoder, got values "
                             f"in [{float(lo):.3g}, {float(hi):.3g}]; rescale the images to "
                             f"[0, 1] or use decoder='gaussian'")
    if decoder == "bernoulli":
        return F.binary_cross_entropy_with_logits(recon, x, reduction="sum") / m
    if decoder == "gaussian":
        return 0.5 * ((x - recon) ** 2 + LOG_2PI).sum() / m
    raise ValueError(f"decoder must be 'bernoulli' or 'gaussian', got {decoder!r}")


def linear_capacity(step: int, capacity_min: float, capacity_max: float,
                    steps: int) -> float:
    """C(t) = C_min + (C_max - C_min) min(t / steps, 1): the linear ramp of Burgess et al. 2018
    and Dupont 2018, flat at C_max once ``steps`` is reached."""
    return capacity_min + (capacity_max - capacity_min) * min(step / steps, 1.0)


# Estimating log q(z) from a minibatch (Chen et al. 2018, Appendix C)
# -----------------------------------------------------------------------------------
# The aggregate posterior q(z) = (1/N) sum_n q(z|x_n) needs all N images. A batch gives M of
# them, x_1..x_M, and z_i ~ q(z|x_i). Let L[i, j] = log q(z_i | x_j) (summed over latents for
# q(z), one latent k at a time for the marginals q(z_k)).
#
# MWS, minibatch-weighted sampling (Chen et al. 2018, App. C.1):
#       log q(z_i) ~= logsumexp_j L[i, j] - log(N M).
#   Chen derive it by importance sampling over batches that contain x_i: each such batch has
#   probability 1/N^(M-1) against 1/N^M for an unconstrained one, a ratio of 1/N, times the 1/M
#   of an average. Trap, which the tests check: logsumexp_j L[i, j] - log M is the plug-in
#   average log[(1/M) sum_j q(z_i|x_j)], which converges to log q(z_i) as M grows; MWS is that
#   minus log N. So with MWS, log q(z) is low by log N, MI is high by log N, TC is high by
#   (d - 1) log N and dim-KL low by d log N -- all constants, so the *gradients* (and training)
#   are those of the plug-in estimator, but the reported values are shifted. Published code
#   disagrees here: Chen's own code uses -log(N M) as we do; disentanglement_lib's
#   total_correlation drops every constant (logsumexp only, i.e. TC shifted by -(d-1) log M).
#
# MSS, minibatch-stratified sampling (Chen App. C.2): treat x_i as the point that generated z_i
# and the other m = M - 1 points as drawn without replacement from the other N - 1. Weights
#       1/N                 on x_i itself (column i),
#       (N - m) / (N m)     on one other point, the "stratum" standing for the N - m points
#                           not in the batch (column (i + 1) mod M),
#       1/m                 on the remaining m - 1 points,
#   log q(z_i) ~= logsumexp_j (L[i, j] + log W[i, j]).
#   The weights sum to 1 (each row is a mixture), and their total on the others is
#   (m - 1)/m + (N - m)/(N m) = (N - 1)/N, so the estimate of q(z_i) (not of its log) is
#   unbiased whatever the batch size. With the whole dataset in the batch (M = N) it is *not*
#   the exact (1/N) sum: the weights are 1/N, 1/(N-1) (N - 2 times) and 1/(N (N-1)), so it is
#   close (within about 1/N relatively) but not equal; the tests check that closed form.
#   Chen et al.'s released code (vae_quant.py, log_importance_weight_matrix) builds W
#   otherwise: with m = M - 1 it writes 1/N at every (m + 1)-th entry of the flattened M x M
#   matrix, meant as the diagonal -- but a stride of M walks down column 0 -- and the stratum
#   weight at the same stride from entry 1 (column 1), plus one at row m - 1, column 0. So the
#   point z_i came from weighs 1/N only in row 0 and 1/m (a plug-in weight) from row 2 on, and
#   row m - 1 does not sum to 1. We follow the derivation; chapter 6 builds both matrices and
#   measures the difference.

def _pairwise_log_density(z, mu, logvar) -> torch.Tensor:
    """L[i, j, k] = log q(z_ik | x_j), shape (M, N, d), in at least float32."""
    dtype = torch.promote_types(z.dtype, torch.float32)
    z, mu, logvar = z.to(dtype), mu.to(dtype), logvar.to(dtype)
    return gaussian_log_density(z[:, None, :], mu[None, :, :], logvar[None, :, :])


def _check_latents(z, mu, logvar, names=("z", "mu", "logvar")) -> None:
    for n, t in zip(names, (z, mu, logvar)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            raise ValueError(f"{n} must be a 2-d tensor (batch, latents), got "
                             f"{getattr(t, 'shape', type(t))}")
    if mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must have the same shape, got {tuple(mu.shape)} and "
                         f"{tuple(logvar.shape)}")
    if z.shape[1] != mu.shape[1]:
        raise ValueError(f"z has {z.shape[1]} latents but mu has {mu.shape[1]}: the latent "
                         f"sizes must match")


def mss_log_weights(batch_size: int, dataset_size: int, device=None,
                    dtype=torch.float32) -> torch.Tensor:
    """log W (M, M) of minibatch-stratified sampling (see the comment block above)."""
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("dataset_size", dataset_size)
    if batch_size < 2:
        raise ValueError("batch_size must be >= 2 for the MSS estimator (it needs at least one "
                         "other point besides x_i); use estimator='mws'")
    if dataset_size < batch_size:
        raise ValueError(f"dataset_size must be >= the batch size for MSS (the batch is drawn "
                         f"without replacement), got dataset_size={dataset_size} < "
                         f"batch size {batch_size}")
    n, m = dataset_size, batch_size - 1
    w = torch.full((batch_size, batch_size), 1.0 / m, dtype=torch.float64)
    idx = torch.arange(batch_size)
    w[idx, (idx + 1) % batch_size] = (n - m) / (n * m)
    w[idx, idx] = 1.0 / n
    return w.log().to(device=device, dtype=dtype)


def estimate_log_qz(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, dataset_size: int,
                    estimator: str = "mws") -> tuple[torch.Tensor, torch.Tensor]:
    """Minibatch estimates of log q(z_i) and of sum_k log q(z_ik), each (M,).

    ``z`` (M, d) are samples with z_i ~ q(z|x_i); ``mu``, ``logvar`` (M, d) are the posteriors of
    the same batch; ``dataset_size`` is N. ``estimator`` is "mws" or "mss" (Chen et al. 2018;
    the constants and why are in the comment block above this function).
    """
    _check_latents(z, mu, logvar)
    if z.shape[0] != mu.shape[0]:
        raise ValueError(f"z and mu must come from the same batch: z has {z.shape[0]} rows, mu "
                         f"{mu.shape[0]}")
    _check_positive_int("dataset_size", dataset_size)
    if estimator not in _ESTIMATORS:
        raise ValueError(f"estimator must be one of {_ESTIMATORS}, got {estimator!r}")
    L = _pairwise_log_density(z, mu, logvar)                      # (M, M, d)
    M = z.shape[0]
    if estimator == "mws":
        const = math.log(dataset_size * M)
        log_qz = torch.logsumexp(L.sum(2), dim=1) - const
        log_prod_qzj = (torch.logsumexp(L, dim=1) - const).sum(1)
    else:
        log_w = mss_log_weights(M, dataset_size, device=L.device, dtype=L.dtype)
        log_qz = torch.logsumexp(L.sum(2) + log_w, dim=1)
        log_prod_qzj = torch.logsumexp(L + log_w[:, :, None], dim=1).sum(1)
    return log_qz, log_prod_qzj


def exact_log_qz(z: torch.Tensor, mu_all: torch.Tensor,
                 logvar_all: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Brute-force log q(z) and sum_k log q(z_k), each (M,), for a dataset small enough to hold
    every posterior: q(z) = (1/N) sum_n q(z|x_n), with ``mu_all``, ``logvar_all`` of shape (N, d).

    The reference the minibatch estimators are tested against."""
    _check_latents(z, mu_all, logvar_all, names=("z", "mu_all", "logvar_all"))
    L = _pairwise_log_density(z, mu_all, logvar_all)             # (M, N, d)
    log_n = math.log(mu_all.shape[0])
    log_qz = torch.logsumexp(L.sum(2), dim=1) - log_n
    log_prod_qzj = (torch.logsumexp(L, dim=1) - log_n).sum(1)
    return log_qz, log_prod_qzj


def kl_decomposition(z, mu, logvar, log_qz, log_prod_qzj) -> dict[str, torch.Tensor]:
    """Chen et al. 2018: the batch average of log q(z|x) - log p(z) split in three,

        mi     = mean[log q(z|x) - log q(z)]            index-code mutual information
        tc     = mean[log q(z) - sum_k log q(z_k)]      total correlation
        dim_kl = mean[sum_k log q(z_k) - log p(z)]      dimension-wise KL

    The three add up to mean[log q(z|x) - log p(z)] for any estimate of log q(z), a Monte-Carlo
    estimate of the average KL(q(z|x) || p(z)). Each is a 0-dim tensor.
    """
    dtype = torch.promote_types(z.dtype, torch.float32)
    z, mu, logvar = z.to(dtype), mu.to(dtype), logvar.to(dtype)
    log_qzx = gaussian_log_density(z, mu, logvar).sum(1)
    log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)
    return dict(mi=(log_qzx - log_qz).mean(), tc=(log_qz - log_prod_qzj).mean(),
                dim_kl=(log_prod_qzj - log_pz).mean())


# ---------------------------------------------------------------------------------------------
# The objectives
# ---------------------------------------------------------------------------------------------

class Objective:
    """Base class: ``objective(out, x, step) -> dict`` of terms. ``out`` is the model's forward
    dict, ``x`` the batch it was computed from, ``step`` the global training step."""

    config = None
    #: whether the objective regularises categorical latents (a JointVAE model's ``logits``)
    categorical = False
    #: check Bernoulli targets in [0, 1] at every call (the training loop checks its data once)
    check_range = True

    def __init__(self, config, decoder: str = "bernoulli"):
        if decoder not in ("bernoulli", "gaussian"):
            raise ValueError(f"decoder must be 'bernoulli' or 'gaussian' (the model's "
                             f"config.decoder), got {decoder!r}")
        self.config = config
        self.decoder = decoder

    def __call__(self, out: dict, x: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        if not is_int(step) or step < 0:
            raise ValueError(f"step must be a non-negative integer (the global training step), "
                             f"got {step!r}")
        for key in ("recon", "mu", "logvar", "z"):
            if key not in out:
                raise ValueError(f"out must be the model's forward dict with keys recon, mu, "
                                 f"logvar, z; '{key}' is missing (got {sorted(out)})")
        if out["mu"].shape[1] != out["z"].shape[1]:
            raise ValueError(f"out['z'] has {out['z'].shape[1]} latents but out['mu'] has "
                             f"{out['mu'].shape[1]}: the latent sizes must match")
        wants_logits = self.categorical
        has_logits = bool(out.get("logits"))
        if has_logits and not wants_logits:
            raise ValueError(f"{type(self.config).__name__} does not regularise categorical "
                             f"latents, but out has 'logits' (a JointVAE model); use "
                             f"JointVAEConfig, or a model with categorical_dims=()")
        if wants_logits and not has_logits:
            raise ValueError("JointVAEConfig needs a JointVAE model (ModelConfig with "
                             "categorical_dims), whose forward dict has 'logits'")
        terms = dict(recon=reconstruction_loss(out["recon"], x, self.decoder, self.check_range))
        kl_per_latent = gaussian_kl(out["mu"].float(), out["logvar"].float()).mean(0)
        terms.update(kl=kl_per_latent.sum(), kl_per_latent=kl_per_latent)
        terms.update(self.terms(out, terms, int(step)))
        return terms

    def terms(self, out, terms, step) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config}, decoder={self.decoder!r})"


class BetaVAELoss(Objective):
    """recon + beta * KL (Higgins et al. 2017); beta = 1 is the negative ELBO."""

    def terms(self, out, terms, step):
        return dict(loss=terms["recon"] + self.config.beta * terms["kl"])


class AnnealedVAELoss(Objective):
    """``recon + gamma * |KL - C(t)|`` (Burgess et al. 2018)."""

    def terms(self, out, terms, step):
        c = self.config
        capacity = linear_capacity(step, c.capacity_min, c.capacity_max, c.capacity_steps)
        capacity = torch.tensor(capacity, device=terms["kl"].device)
        return dict(loss=terms["recon"] + c.gamma * (terms["kl"] - capacity).abs(),
                    capacity=capacity)


class BetaTCVAELoss(Objective):
    """recon + alpha * MI + beta * TC + gamma * dim-KL (Chen et al. 2018), with log q(z)
    estimated on the batch by MWS or MSS. ``kl`` is still the closed-form KL; the three terms
    add up to its Monte-Carlo estimate on the batch's z."""

    def terms(self, out, terms, step):
        c = self.config
        z, mu, logvar = out["z"], out["mu"], out["logvar"]
        log_qz, log_prod = estimate_log_qz(z, mu, logvar, c.dataset_size, c.estimator)
        parts = kl_decomposition(z, mu, logvar, log_qz, log_prod)
        loss = (terms["recon"] + c.alpha * parts["mi"] + c.beta * parts["tc"]
                + c.gamma * parts["dim_kl"])
        return dict(loss=loss, **parts)


class JointVAELoss(Objective):
    """``recon + gamma |KL_cont - C_cont(t)| + gamma |KL_disc - C_disc(t)|`` (Dupont 2018).

    KL_cont is the closed-form Gaussian KL; KL_disc is the sum over categoricals of
    KL(q(c|x) || Uniform(k)), with q(c|x) = softmax(logits). ``kl`` = KL_cont + KL_disc and
    ``kl_per_latent`` covers the continuous latents; ``capacity`` is C_cont(t) and
    ``capacity_disc`` C_disc(t) after clipping at sum_i log k_i. ``info_disc`` (logged, not
    optimised) is the batch's estimate of the information the categoricals carry about the
    image, sum_i I(n; c_i) = KL_disc - sum_i KL(q_bar_i || Uniform(k_i)) with q_bar_i the batch
    mean of q(c_i|x): the discrete KL minus its *marginal confidence*, which a category that is
    the same for every image can fill on its own (chapter 7, section 7.6)."""

    categorical = True

    def terms(self, out, terms, step):
        c = self.config
        kl_cont = terms["kl"]
        logits = out["logits"]
        probs = [torch.softmax(l.float(), dim=1) for l in logits]
        kl_disc = sum(categorical_kl_uniform(q).mean() for q in probs)
        with torch.no_grad():
            info_disc = sum(categorical_kl_split(q)[0] for q in probs)
        max_disc = sum(math.log(l.shape[1]) for l in logits)
        cap_cont = linear_capacity(step, c.cont_capacity_min, c.cont_capacity_max,
                                   c.capacity_steps)
        cap_disc = min(linear_capacity(step, c.disc_capacity_min, c.disc_capacity_max,
                                       c.capacity_steps), max_disc)
        dev = kl_cont.device
        cap_cont, cap_disc = torch.tensor(cap_cont, device=dev), torch.tensor(cap_disc, device=dev)
        loss = (terms["recon"] + c.gamma * (kl_cont - cap_cont).abs()
                + c.gamma * (kl_disc - cap_disc).abs())
        return dict(loss=loss, kl=kl_cont + kl_disc, kl_cont=kl_cont, kl_disc=kl_disc,
                    info_disc=info_disc, capacity=cap_cont, capacity_disc=cap_disc)


def permute_dims(z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each column of ``z`` (M, d) permuted independently across the batch (Kim & Mnih 2018,
    Algorithm 1): every column keeps its values -- the marginals q(z_j) are unchanged -- while
    the dependence between columns is broken, so the rows are samples of prod_j q(z_j)."""
    m, d = z.shape
    device = generator.device if generator is not None else z.device
    order = torch.argsort(torch.rand(m, d, generator=generator, device=device), dim=0)
    return torch.gather(z, 0, order.to(z.device))


def density_ratio_tc(logits: torch.Tensor) -> torch.Tensor:
    """TC estimated from a discriminator's logits on samples of q(z): mean of log D / (1 - D)
    = logit_0 - logit_1, where class 0 is "from q(z)". For the optimal D, D / (1 - D) =
    q(z) / prod_j q(z_j), so this is a Monte-Carlo estimate of KL(q(z) || prod_j q(z_j))."""
    return (logits[:, 0] - logits[:, 1]).mean()


class FactorDiscriminator(nn.Module):
    """The FactorVAE discriminator: ``layers`` hidden layers of ``hidden`` units with leaky
    ReLU (slope 0.2), then 2 logits (class 0: a code of the batch; class 1: a permuted one)."""

    def __init__(self, latent_dim: int, hidden: int = 1000, layers: int = 6):
        super().__init__()
        blocks, width = [], latent_dim
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        self.net = nn.Sequential(*blocks, nn.Linear(width, 2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class FactorVAELoss(Objective):
    """``recon + KL + gamma * TC`` (Kim & Mnih 2018), TC by :func:`density_ratio_tc`.

    The first objective with parameters of its own: it owns the discriminator and its Adam, is
    moved with ``to(device)``, carries both in ``state_dict()`` (the checkpoint stores it), and
    ``update()`` -- which the training loop calls after each model update -- takes one
    discriminator step on the batch it saw last: cross-entropy of the batch's codes (class 0)
    against the same codes with permuted dimensions (class 1), both detached, so the VAE's
    update and the discriminator's do not mix.

    Departure from the paper: Kim & Mnih (Algorithm 2) permute the codes of a *second* batch; we
    permute the same batch's codes, as disentanglement_lib does (``shuffle_codes`` on the
    sampled z): one batch a step, so the loop and its data stay the same for every objective.
    The permutation is drawn from torch's global generator, which checkpoints save, so a
    resumed run continues bitwise."""

    def __init__(self, config, decoder: str = "bernoulli"):
        super().__init__(config, decoder)
        self.discriminator, self.optimizer, self._pending = None, None, None

    def bind(self, latent_dim: int) -> "FactorVAELoss":
        """Build the discriminator for ``latent_dim`` latents (the training loop calls this right
        after building the model, so that its initial weights come from the same seeded random
        stream in a fresh run and in a resumed one; otherwise the first call builds it)."""
        c = self.config
        self.discriminator = FactorDiscriminator(latent_dim, c.disc_hidden, c.disc_layers)
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=c.disc_lr,
                                          betas=(c.disc_beta1, c.disc_beta2))
        return self

    def to(self, device) -> "FactorVAELoss":
        """Move the discriminator (and its optimiser's state) to ``device``."""
        if self.discriminator is not None:
            self.discriminator.to(device)
            for state in self.optimizer.state.values():
                for k, v in state.items():
                    if isinstance(v, torch.Tensor) and k != "step":
                        state[k] = v.to(device)
        return self

    def terms(self, out, terms, step):
        z = out["z"].float()
        if self.discriminator is None:
            self.bind(z.shape[1]).to(z.device)
        tc = density_ratio_tc(self.discriminator(z))
        disc_loss, accuracy = self.discriminator_loss(z.detach())
        self._pending = disc_loss
        return dict(loss=terms["recon"] + terms["kl"] + self.config.gamma * tc, tc=tc,
                    disc_loss=disc_loss.detach(), disc_accuracy=accuracy)

    def discriminator_loss(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cross-entropy, accuracy) of the discriminator telling the codes ``z`` (class 0) from
        the same codes with each dimension permuted across the batch (class 1)."""
        logits = self.discriminator(torch.cat([z, permute_dims(z)]))
        labels = torch.cat([torch.zeros(len(z), dtype=torch.long, device=z.device),
                            torch.ones(len(z), dtype=torch.long, device=z.device)])
        return F.cross_entropy(logits, labels), (logits.argmax(1) == labels).float().mean()

    def update(self) -> None:
        """One discriminator step on the loss of the last call (none if there was none)."""
        if self._pending is None:
            return
        self.optimizer.zero_grad(set_to_none=True)
        self._pending.backward()
        self.optimizer.step()
        self._pending = None

    def state_dict(self) -> dict:
        """The discriminator's weights and its Adam state (what a checkpoint stores)."""
        if self.discriminator is None:
            raise ValueError("the discriminator does not exist yet: call bind(latent_dim) first")
        return {"discriminator": self.discriminator.state_dict(),
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.discriminator is None:
            raise ValueError("the discriminator does not exist yet: call bind(latent_dim) first")
        if not (isinstance(state, dict) and {"discriminator", "optimizer"} <= set(state)):
            raise ValueError("a FactorVAE objective state needs 'discriminator' and 'optimizer'")
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])


def swap_parts(za: torch.Tensor, zb: torch.Tensor, mask: torch.Tensor):
    """``(za', zb')``: the entries where ``mask`` (M, d) is True exchanged between the two codes
    (M, d) -- Dual-Swap's swap of one part per pair."""
    return torch.where(mask, zb, za), torch.where(mask, za, zb)


class DualSwapLoss(Objective):
    """Dual-Swap Disentangling (Feng et al. 2018) on pairs from a ground-truth dataset.

    Pairs: the training loop asks :meth:`pair_sampler` for its batches. Each batch holds M pairs
    (A, B) and, for each, a part k (one factor): the first ``round(supervision * M)`` pairs are
    *labelled* -- B's factors are drawn, then factor k is copied from A, so the two images share
    it -- and the others are unlabelled (A and B drawn independently, k drawn uniformly).

    Losses (:meth:`pair_terms`), with the code of an image the encoder's output R = [r_1 .. r_K]:

    * labelled pair sharing factor k: swap r_k between R_A and R_B, decode, and ask for A and B
      back (the shared factor's part must carry nothing else);
    * unlabelled pair: swap r_k, decode the two hybrids, encode them, swap r_k back, decode, and
      ask for A and B back (the dual swap: a part must travel with its content and return).

    ``loss = (labelled_weight * sum over labelled pairs + unlabelled_weight * sum over the others)
    / M`` of the reconstruction errors of both images of a pair. Logged per image: ``swap`` (the
    labelled pairs' error), ``dual_swap`` (the unlabelled pairs'), ``recon`` (all pairs'); 0 for
    a kind of pair the batch does not hold.

    Where this implementation departs from the paper, as we read it (we have not run the
    authors' code): (1) the reconstruction error is the library's -log p(x|z) of the model's
    decoder -- Bernoulli cross-entropy for binary dSprites; the paper writes a squared L2
    distance, which the Gaussian decoder gives up to constants; (2) the autoencoder is the
    library's convolutional model with its encoder *means* as the code, so it is deterministic
    as the paper's is, and its log-variance head is unused (no sampling, no KL); (3) pairs come
    from the dataset's generative protocol, with a fixed number of labelled pairs in each batch
    instead of a labelled subset of a fixed training set; (4) the hybrids are re-encoded as the
    decoder's mean images (the sigmoid of its logits), and gradients flow through both stages.
    """

    #: the training loop draws pairs (:meth:`pair_sampler`) and calls :meth:`pair_terms`
    pairs = True

    def labelled_count(self, pairs: int) -> int:
        """How many of ``pairs`` pairs in a batch are labelled."""
        return int(round(self.config.supervision * pairs))

    def check_model(self, model_config, dataset) -> None:
        """The code must hold one part of ``part_size`` latents per factor of ``dataset``."""
        if not (hasattr(dataset, "sample_factors") and hasattr(dataset, "images_from_factors")):
            raise ValueError(f"Dual-Swap trains on pairs that share a known factor, so it needs "
                             f"a ground-truth dataset (sample_factors, images_from_factors), "
                             f"e.g. DSprites(); got {type(dataset).__name__}")
        if getattr(model_config, "categorical_dims", ()):
            raise ValueError("Dual-Swap swaps parts of a continuous code; use a model with "
                             "categorical_dims=()")
        k, size = dataset.num_factors, self.config.part_size
        if model_config.latent_dim != k * size:
            raise ValueError(f"Dual-Swap needs one part of part_size={size} latents for each of "
                             f"the dataset's {k} factors ({', '.join(dataset.factor_names)}): "
                             f"latent_dim must be {k * size}, got {model_config.latent_dim}")

    def parts(self, factor_names) -> dict[str, list[int]]:
        """{factor name: its latents}, for :func:`bvae_lib.metrics.swap_accuracy`."""
        size = self.config.part_size
        return {name: list(range(k * size, (k + 1) * size))
                for k, name in enumerate(factor_names)}

    def part_mask(self, part: torch.Tensor, latent_dim: int) -> torch.Tensor:
        """(M, d) bool: True on the latents of each pair's part (part k = latents
        ``k * part_size .. (k + 1) * part_size - 1``)."""
        owner = torch.arange(latent_dim, device=part.device) // self.config.part_size
        return owner.unsqueeze(0) == part.unsqueeze(1)

    def pair_sampler(self, dataset, pairs: int, generator: torch.Generator):
        """A function drawing one batch: ``(x, part)`` with x = (2M, C, 64, 64), the M images A
        then the M images B, and part (M,) the factor of each pair; every random number comes
        from ``generator`` (a checkpoint saves its state)."""
        k = dataset.num_factors
        labelled = self.labelled_count(pairs)
        render = getattr(dataset, "_render_drawn", dataset.images_from_factors)

        def next_batch():
            fa = dataset.sample_factors(pairs, generator)
            fb = dataset.sample_factors(pairs, generator)
            part = torch.randint(k, (pairs,), generator=generator,
                                 device=generator.device).to(fa.device)
            shared = torch.arange(k, device=fa.device).unsqueeze(0) == part.unsqueeze(1)
            shared[labelled:] = False
            fb = torch.where(shared, fa, fb)
            return render(torch.cat([fa, fb])), part
        return next_batch

    def _images(self, recon: torch.Tensor) -> torch.Tensor:
        """The decoder's mean images, to be encoded again."""
        return torch.sigmoid(recon) if self.decoder == "bernoulli" else recon

    def _error(self, recon, x) -> torch.Tensor:
        """Summed reconstruction error over the images (a 0-dim tensor)."""
        return reconstruction_loss(recon, x, self.decoder, self.check_range) * len(x)

    def pair_terms(self, model, x: torch.Tensor, part: torch.Tensor, step: int) -> dict:
        """The loss terms of one batch of pairs (see the class docstring)."""
        if not is_int(step) or step < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        m = len(part)
        if x.shape[0] != 2 * m:
            raise ValueError(f"x must hold the M={m} images A then the M images B, (2M, C, H, "
                             f"W); got {tuple(x.shape)}")
        c, n_lab = self.config, self.labelled_count(m)
        z = model.encode(x)[0]
        mask = self.part_mask(part, z.shape[1])
        ha, hb = swap_parts(z[:m], z[m:], mask)
        first = model.decode(torch.cat([ha, hb]))
        xa, xb = x[:m], x[m:]
        zero = torch.zeros((), device=x.device)
        swap_err, dual_err = zero, zero
        if n_lab:
            swap_err = (self._error(first[:n_lab], xa[:n_lab])
                        + self._error(first[m:m + n_lab], xb[:n_lab]))
        if n_lab < m:
            hybrids = self._images(torch.cat([first[n_lab:m], first[m + n_lab:]]))
            u = m - n_lab
            z2 = model.encode(hybrids)[0]
            back_a, back_b = swap_parts(z2[:u], z2[u:], mask[n_lab:])
            second = model.decode(torch.cat([back_a, back_b]))
            dual_err = self._error(second, torch.cat([xa[n_lab:], xb[n_lab:]]))
        loss = (c.labelled_weight * swap_err + c.unlabelled_weight * dual_err) / m
        return dict(loss=loss, recon=(swap_err + dual_err).detach() / (2 * m),
                    swap=swap_err.detach() / max(2 * n_lab, 1),
                    dual_swap=dual_err.detach() / max(2 * (m - n_lab), 1))

    def terms(self, out, terms, step):
        raise TypeError("Dual-Swap is trained on pairs: call pair_terms(model, x, part, step) "
                        "with a batch from pair_sampler (bvae_lib.train.train does)")


_OBJECTIVES = {BetaVAEConfig: BetaVAELoss, AnnealedVAEConfig: AnnealedVAELoss,
               BetaTCVAEConfig: BetaTCVAELoss, JointVAEConfig: JointVAELoss,
               FactorVAEConfig: FactorVAELoss, DualSwapConfig: DualSwapLoss}


def build_objective(config, decoder: str = "bernoulli") -> Objective:
    """The objective a config describes. ``decoder`` must be the model's ``config.decoder``
    ("bernoulli" or "gaussian"): it decides how the reconstruction term reads the model output.
    A dict from :func:`objective_config_to_dict` is accepted too."""
    if isinstance(config, dict):
        config = objective_config_from_dict(config)
    if type(config) not in _OBJECTIVES:
        raise TypeError(f"config must be one of {[c.__name__ for c in _OBJECTIVES]}, got "
                        f"{type(config).__name__}")
    return _OBJECTIVES[type(config)](config, decoder=decoder)
