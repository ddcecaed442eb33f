"""Mutual Information Gap (Chen et al. 2018, "Isolating sources of disentanglement in VAEs").

For each factor v_k, find the two code dimensions that share the most information with it; the
gap between them, normalised, says whether *one* dimension captures the factor:

    MIG = 1/K sum_k [ I(z_{j(k)}; v_k) - max_{j != j(k)} I(z_j; v_k) ] / H(v_k),
    j(k) = argmax_j I(z_j; v_k).

A factor copied into two dimensions has gap 0, however informative the copies; a factor no
dimension captures has gap 0 too. Two estimators of I(z_j; v_k) are in use, and they give
different numbers, so say which one a table reports:

``estimator="histogram"`` (disentanglement_lib, Locatello et al. 2019)
    Encode ``num_points=10_000`` random images, cut each code dimension into ``num_bins=20``
    equal-width bins between its min and max, and compute the *discrete* mutual information of
    bins and factor classes on that sample; normalise by the sample entropy of the factor. Works
    on codes alone (:func:`mig_from_codes`). With 20 bins a factor with more than 20 classes
    (orientation 40, positions 32) cannot reach gap 1: the maximum is H(binned v)/H(v).
    The plug-in estimate is biased upwards by about (bins - 1)(classes - 1)/(2n) nats, so
    independent codes score slightly above 0 (~0.01 at the defaults).
``estimator="sampling"`` (Chen et al.'s code for dSprites)
    Needs the posterior q(z|x): ``representation`` must return ``(mu, logvar)`` (e.g.
    ``model.encode``). Over the whole dataset (or ``num_points`` random images), draw one
    z ~ q(z|x) per image; H(z_j) = -E log q(z_j) with q(z_j) = 1/N sum_n q(z_j|x_n) the
    aggregate posterior, estimated on ``num_samples=10_000`` of the samples against the posteriors
    of *all* N images; H(z_j | v_k) = sum_v p(v) H(z_j | v_k = v) the same way within the images
    having v_k = v. I = H(z_j) - H(z_j | v_k), clamped at 0, normalised by ``log |V_k|``.
    Cost: N images encoded (737,280 for the whole of dSprites) and about
    (K + 1) * min(num_samples, N) * N * d Gaussian densities (4.4e11 at the defaults on
    dSprites), evaluated in float32 in chunks of ``chunk_elements`` on the dataset's device: on
    a CPU use a subset (``num_points=5_000, num_samples=5_000``) or a GPU (timings in
    ``benchmarks/README.md``).

Chen et al. report MIG on the four dSprites factors other than shape; disentanglement_lib scores
all five. ``factors=None`` scores every factor of the dataset; pass
``factors=("scale", "orientation", "position_x", "position_y")`` to follow Chen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..distributions import reparameterize
from ._mig_entropy import mixture_entropy
from .utils import (RepresentationFn, check_codes, check_factor_classes, check_int,
                    discrete_entropy, discrete_mutual_info, encode_factors, encode_gaussian,
                    histogram_discretize, make_generator, resolve_factors, top_two_gap,
                    RENDER_CHUNK)

ESTIMATORS = ("histogram", "sampling")


@dataclass(frozen=True)
class MIGResult:
    """Result of :func:`mig`: ``score`` is the mean of ``gaps``."""
    score: float
    gaps: np.ndarray              # (K,) normalised gap of each scored factor
    mutual_info: np.ndarray       # (d, K) I(z_j; v_k) in nats
    factor_entropy: np.ndarray    # (K,) the normaliser: H(v_k) (histogram) or log|V_k| (sampling)
    factors: tuple[str, ...]
    estimator: str
    num_points: int


def mig(representation: RepresentationFn, dataset, estimator: str = "histogram",
        num_points: int | None = None, factors: "Sequence[str | int] | None" = None,
        num_bins: int = 20, codes: str = "mean", num_samples: int = 10_000, seed: int = 0,
        batch_size: int = 256, chunk_elements: int | None = None) -> MIGResult:
    """MIG of ``representation`` on ``dataset`` (see the module docstring for both estimators).

    ``num_points``: images encoded; ``None`` means 10,000 random images for the histogram
    estimator (disentanglement_lib) and the whole dataset for the sampling estimator (Chen).
    ``codes`` (histogram only): ``"mean"`` discretises the codes the representation returns;
    ``"sample"`` discretises one z ~ q(z|x) per image and needs a ``(mu, logvar)``
    representation. ``num_samples`` and ``chunk_elements`` are for the sampling estimator.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if codes not in ("mean", "sample"):
        raise ValueError(f"codes must be 'mean' or 'sample', got {codes!r}")
    factor_idx = resolve_factors(dataset, factors)
    batch_size = check_int(batch_size, "batch_size")
    generator = make_generator(seed)
    if num_points is None and estimator == "sampling":
        factor_classes = dataset.factors(torch.arange(len(dataset), device=dataset.device))
    else:
        n = 10_000 if num_points is None else check_int(num_points, "num_points")
        factor_classes = dataset.sample_factors(n, generator)
    names = tuple(dataset.factor_names[k] for k in factor_idx)

    if estimator == "histogram":
        check_int(num_bins, "num_bins", minimum=2)
        if factor_classes.shape[0] < num_bins:
            raise ValueError(f"num_points={factor_classes.shape[0]} is fewer than "
                             f"num_bins={num_bins}; use at least as many points as bins "
                             f"(disentanglement_lib: 10,000 points, 20 bins)")
        if codes == "mean":
            z = encode_factors(representation, dataset, factor_classes, batch_size)
        else:
            mu, logvar = _posterior(representation, dataset, factor_classes, batch_size)
            z = reparameterize(mu, logvar, generator).cpu().numpy()
        result = mig_from_codes(z, factor_classes.cpu().numpy()[:, factor_idx], num_bins)
        return MIGResult(**{**result.__dict__, "factors": names})

    if codes != "mean":
        raise ValueError("codes='sample' is for the histogram estimator; the sampling estimator "
                         "always works from samples of q(z|x)")
    mu, logvar = _posterior(representation, dataset, factor_classes, batch_size)
    result = mig_from_posterior(mu, logvar, factor_classes[:, factor_idx],
                                [dataset.factor_sizes[k] for k in factor_idx],
                                num_samples=num_samples, seed=seed,
                                chunk_elements=chunk_elements)
    return MIGResult(**{**result.__dict__, "factors": names})


def mig_from_codes(codes, factor_classes, num_bins: int = 20) -> MIGResult:
    """Histogram MIG from arrays alone: ``codes`` (n, d), ``factor_classes`` (n, K) integers.

    Each code dimension is discretised into ``num_bins`` equal-width bins (disentanglement_lib),
    I(z_j; v_k) is the discrete mutual information of the sample (nats, as
    ``sklearn.metrics.mutual_info_score``), and each gap is divided by the sample entropy
    H(v_k).
    """
    codes = check_codes(codes)
    classes = check_factor_classes(factor_classes, codes.shape[0])
    num_bins = check_int(num_bins, "num_bins", minimum=2)
    n = codes.shape[0]
    if n < num_bins:
        raise ValueError(f"{n} points are too few for num_bins={num_bins}: use at least as many "
                         f"points as bins (disentanglement_lib: 10,000 points, 20 bins)")
    entropy = discrete_entropy(classes)
    if np.any(entropy == 0):
        k = int(np.argmin(entropy))
        raise ValueError(f"factor column {k} is constant in these {n} points, so no code can "
                         f"carry information about it; drop it or sample more points")
    mi = discrete_mutual_info(histogram_discretize(codes, num_bins), classes)
    gaps = top_two_gap(mi) / entropy
    return MIGResult(score=float(np.mean(gaps)), gaps=gaps, mutual_info=mi,
                     factor_entropy=entropy,
                     factors=tuple(f"factor {k}" for k in range(classes.shape[1])),
                     estimator="histogram", num_points=n)


def mig_from_posterior(mu, logvar, factor_classes, factor_sizes: Sequence[int] | None = None,
                       num_samples: int = 10_000, seed: int = 0,
                       chunk_elements: int | None = None, dtype: torch.dtype = torch.float32
                       ) -> MIGResult:
    """Sampling-estimator MIG (Chen et al. 2018) from posteriors alone.

    ``mu``, ``logvar``: (N, d) parameters of q(z|x_n); ``factor_classes``: (N, K) integers;
    ``factor_sizes``: ``|V_k|`` for the normaliser ``log |V_k|`` (default: the number of classes seen).
    The computation runs on the device of ``mu``, in chunks of at most ``chunk_elements``
    densities (default: 2**18 on a CPU, which stays in cache, 2**25 on a GPU), so memory stays
    bounded whatever N is. The densities are summed in ``dtype`` (float32 by default, about 6
    times faster than float64 on a CPU and accurate to ~1e-6 nats; see
    :func:`bvae_lib.metrics._mig_entropy.mixture_entropy`); pass ``dtype=torch.float64`` to check.

    Each entropy is H(z_j) = -E_s[log q(z_sj)], q(z_j) = 1/n sum_i q(z_j | x_i) over the images
    in question (all of them, or those with v_k = v): the log of a mixture of n Gaussians, at
    num_samples of its own samples. ``_mig_entropy`` evaluates that sum fast and safely.
    """
    mu = torch.as_tensor(mu, dtype=torch.float64)
    logvar = torch.as_tensor(logvar, dtype=torch.float64, device=mu.device)
    if mu.dim() != 2 or mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must both have shape (N, d), got {tuple(mu.shape)} and "
                         f"{tuple(logvar.shape)}")
    if not (torch.isfinite(mu).all() and torch.isfinite(logvar).all()):
        raise ValueError("mu or logvar contain NaN or infinite values; check the encoder")
    classes = torch.as_tensor(check_factor_classes(factor_classes, mu.shape[0]), device=mu.device)
    num_samples = check_int(num_samples, "num_samples")
    if chunk_elements is None:
        chunk_elements = 2**25 if mu.device.type == "cuda" else 2**18
    chunk_elements = check_int(chunk_elements, "chunk_elements")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    K = classes.shape[1]
    if factor_sizes is None:
        factor_sizes = [int(classes[:, k].max()) + 1 for k in range(K)]
    if len(factor_sizes) != K:
        raise ValueError(f"factor_sizes has {len(factor_sizes)} entries for {K} factor columns")
    if any(s < 2 for s in factor_sizes):
        raise ValueError(f"every factor needs at least 2 values (log|V_k| > 0), got "
                         f"{list(factor_sizes)}")
    generator = make_generator(seed)
    z = reparameterize(mu, logvar, generator)   # one z ~ q(z|x_n) per image, float64

    marginal = mixture_entropy(z, mu, logvar, torch.arange(mu.shape[0], device=mu.device),
                        num_samples, generator, chunk_elements, dtype)
    conditional = torch.zeros(mu.shape[1], K, dtype=torch.float64, device=mu.device)
    for k in range(K):
        for v in torch.unique(classes[:, k]):
            members = torch.nonzero(classes[:, k] == v).reshape(-1)
            p_v = members.numel() / mu.shape[0]
            conditional[:, k] += p_v * mixture_entropy(z, mu, logvar, members, num_samples, generator,
                                                chunk_elements, dtype)
    mi = (marginal[:, None] - conditional).clamp(min=0).cpu().numpy()
    normaliser = np.log(np.asarray(factor_sizes, dtype=np.float64))
    gaps = top_two_gap(mi) / normaliser
    return MIGResult(score=float(np.mean(gaps)), gaps=gaps, mutual_info=mi,
                     factor_entropy=normaliser, factors=tuple(f"factor {k}" for k in range(K)),
                     estimator="sampling", num_points=int(mu.shape[0]))


def _posterior(representation, dataset, factor_classes, batch_size):
    """(mu, logvar) of every image of ``factor_classes``, rendered in chunks."""
    mus, logvars = [], []
    chunk = max(RENDER_CHUNK, batch_size)
    for start in range(0, factor_classes.shape[0], chunk):
        images = dataset.images_from_factors(factor_classes[start:start + chunk])
        mu, logvar = encode_gaussian(representation, images, batch_size)
        mus.append(mu)
        logvars.append(logvar)
    return torch.cat(mus), torch.cat(logvars)
