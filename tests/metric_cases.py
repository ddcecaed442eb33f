"""Representations with known properties, shared by the metric tests."""

import torch

from bvae_lib.baselines import IdentityObservations


def noisy(scale=None, perm=None, noise=0.5, seed=1):
    """Factors scaled to [0, 1) plus Gaussian noise (the same noise for the same call sequence),
    optionally with the dimensions permuted and rescaled: partly informative codes, so the
    score is neither chance nor 1."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.tensor(IdentityObservations().factor_sizes, dtype=torch.float32)

    def rep(v):
        z = v / sizes + noise * torch.randn(v.shape, generator=g)
        if perm is not None:
            z = z[:, perm]
        if scale is not None:
            z = z * torch.as_tensor(scale, dtype=z.dtype)
        return z
    return rep
