"""The entropies of the sampling MIG estimator, computed fast (:func:`bvae_lib.metrics.mig`).

:mod:`bvae_lib.metrics._mig` defines the estimator: H(z_j) = -E log q(z_j), with q(z_j) the
mixture of the posteriors of the images in question. This module only evaluates that
log-mixture fast -- in float32, without overflow or underflow, in bounded memory -- and is not
needed to read the definition. ``_log_mixture_exact`` is the same quantity written plainly (a
float64 logsumexp); the fast path falls back to it where float32 cannot represent a sum, and
the tests check the two agree.
"""

from __future__ import annotations

import math

import torch

from ..distributions import gaussian_log_density


def mixture_entropy(z, mu, logvar, members, num_samples, generator, chunk_elements,
                    dtype=torch.float32):
    """Monte-Carlo H(z_j) of the mixture (1/n) sum_{i in members} q(z_j|x_i), per dimension j.

    The samples are the z of up to ``num_samples`` randomly chosen members (one z ~ q(z|x_i)
    each, so they are draws from the mixture); each is scored against all members' posteriors:
    log q(z_s) = log sum_i q(z_s|x_i) - log n. Chunked over samples and members so that no more
    than ``chunk_elements`` densities exist at once.

    Speed: with a_i = 1/sigma_i^2 and c_i = -(log sigma_i^2 + log 2 pi)/2,
    log q(z|x_i) = c_i - a_i (z - mu_i)^2 / 2 <= max_i c_i =: C. Every density is therefore
    summed as exp(c_i - C - a_i (z - mu_i)^2 / 2) <= 1, which cannot overflow, with no running
    maximum to track (a logsumexp needs two extra passes). In float32 (the default) this is
    about 6 times faster than float64 on a CPU. Accuracy: the codes are centred before the cast;
    a log-density's relative error is then ~1e-7 (z - mu)^2 / sigma^2 * |z| / |z - mu|, a few
    1e-5 nats for the posteriors of a trained VAE (sigma >= 0.01), and the entropies agree with
    float64 to ~1e-6 nats (tested). A sample whose every term underflows (posterior variances
    spread over more than ~e^170) is recomputed exactly with a float64 logsumexp, and
    posteriors too narrow for float32's range are computed in float64 throughout.
    """
    n, d = members.numel(), mu.shape[1]
    pick = torch.randperm(n, generator=generator)[:num_samples].to(members.device)
    samples = z[members[pick]]                                           # (S, d) float64
    mu_m, logvar_m = mu[members], logvar[members]
    ref = mu_m.mean(0)                                                   # centre before the cast
    c = -0.5 * (logvar_m + math.log(2 * math.pi))                        # (n, d)
    top = c.max(0).values                                                # (d,) the C above
    scale = torch.exp(-0.5 * logvar_m) * math.sqrt(0.5)                 # sqrt(a/2), float64
    span = max(float((samples - ref).abs().max()), float((mu_m - ref).abs().max())) + 1.0
    if dtype == torch.float32 and float(scale.max()) * span > 1e36:
        dtype = torch.float64     # posteriors too narrow for float32's range (sigma < ~1e-36)
    # Dimension-major layouts, so the sum over members runs along contiguous memory.
    c_rel = (c - top).to(dtype).T.contiguous()                           # (d, n), <= 0
    scale = scale.to(dtype).T.contiguous()
    mu_scaled = ((mu_m - ref).to(dtype).T * scale).contiguous()          # (d, n)
    zs_all = (samples - ref).to(dtype).T.contiguous()                    # (d, S)
    per_member = max(1, min(n, chunk_elements // d))
    per_sample = max(1, chunk_elements // (per_member * d))
    total = torch.zeros(d, dtype=torch.float64, device=mu.device)
    for s0 in range(0, zs_all.shape[1], per_sample):
        zs = zs_all[:, s0:s0 + per_sample, None]                         # (d, c, 1)
        acc = torch.zeros(d, zs.shape[1], dtype=torch.float64, device=mu.device)
        for i0 in range(0, n, per_member):
            part = slice(i0, i0 + per_member)
            t = zs * scale[:, None, part]                                # (d, c, m)
            t.sub_(mu_scaled[:, None, part]).square_().neg_().add_(c_rel[:, None, part]).exp_()
            acc += t.sum(2).double()
        lse = acc.log()                                                  # log sum_i q / e^C
        bad = acc <= 0                                                   # every term underflowed
        if bad.any():
            exact = _log_mixture_exact(samples[s0:s0 + per_sample], mu_m, logvar_m, per_member)
            lse = torch.where(bad, exact.T - top[:, None], lse)
        total += lse.sum(1)
    return -(total / samples.shape[0] + top - math.log(n))


def _log_mixture_exact(zs, mu_m, logvar_m, per_member):
    """log sum_i q(z_s|x_i) per sample and dimension, (c, d), by a float64 logsumexp."""
    lse = None
    for i0 in range(0, mu_m.shape[0], per_member):
        logq = gaussian_log_density(zs[None], mu_m[i0:i0 + per_member, None],
                                    logvar_m[i0:i0 + per_member, None])  # (m, c, d)
        part = torch.logsumexp(logq, dim=0)
        lse = part if lse is None else torch.logaddexp(lse, part)
    return lse
