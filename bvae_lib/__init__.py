"""bvae_lib: the compact library behind bvae-book.

One concept a module, readable top to bottom:

- ``bvae_lib.data``          ground-truth datasets (procedural dSprites, the official file, MNIST/CelebA)
- ``bvae_lib.distributions`` Gaussian, Gumbel and Concrete densities, samplers and KLs
- ``bvae_lib.models``        encoders, decoders, the VAE and the joint (continuous + discrete) VAE
- ``bvae_lib.objectives``    beta-VAE, capacity annealing, beta-TCVAE, JointVAE losses
- ``bvae_lib.train``         the training loop, budgets, devices
- ``bvae_lib.checkpoint``    atomic, resumable checkpoints
- ``bvae_lib.metrics``       beta-VAE metric, MIG, FactorVAE score, DCI, SAP
- ``bvae_lib.viz``           traversals, reconstructions, curves
- ``bvae_lib.zoo``           the pretrained models shipped with the book

Submodules are imported on first use, so ``import bvae_lib`` stays fast.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("data", "distributions", "models", "objectives", "train", "checkpoint",
               "metrics", "baselines", "viz", "zoo", "cli", "book")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'bvae_lib' has no attribute '{name}'")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
