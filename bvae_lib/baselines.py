"""Baseline representations, scored by the same metrics as the VAEs.

Each baseline is a :class:`Representation`: a callable images ``(n, C, 64, 64)`` -> codes
``(n, d)``, so ``beta_vae_score(fit_pca(ds), ds)`` and ``beta_vae_score(model.representation,
ds)`` run the same code. They answer "how much of a score does one get for free?":

* :func:`raw_pixels` -- the D = 4096 pixels themselves (nothing learnt);
* :func:`fit_pca` -- the top principal components of the images (linear, decorrelated);
* :func:`fit_ica` -- FastICA components (linear, *independent*: the classical answer to
  "find the factors", which fails here because images are not linear mixtures of factors);
* :func:`untrained_encoder` -- a Burgess encoder at its random initialisation (what training
  adds beyond the architecture).

And the oracle: :class:`IdentityObservations` is a ground-truth dataset whose observations are
the factor classes themselves, so ``identity`` (or any map of it: a permutation, a rescaling,
a copy of a factor) is scored without images. dSprites images cannot serve, since symmetric
shapes make several factor combinations render the same image. (disentanglement_lib tests its
metrics the same way, with ``IdentityObservationsData``.)
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from sklearn.decomposition import PCA, FastICA
from sklearn.pipeline import make_pipeline

from .data import GroundTruthDataset
from ._validate import is_int

__all__ = ["Representation", "raw_pixels", "fit_pca", "fit_ica", "untrained_encoder",
           "identity", "IdentityObservations"]


class Representation:
    """A named callable images -> codes (n, d) (numpy float or torch, as the wrapped function
    returns). ``model`` holds the fitted object (a scikit-learn estimator, a network)."""

    def __init__(self, name: str, fn: Callable, dim: int, model=None):
        self.name, self.fn, self.dim, self.model = name, fn, dim, model

    def __call__(self, images):
        return self.fn(images)

    def __repr__(self) -> str:
        return f"Representation({self.name}, d={self.dim})"


def _flatten(images) -> np.ndarray:
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    images = np.asarray(images, dtype=np.float32)
    if images.ndim < 2:
        raise ValueError(f"images must have shape (n, C, H, W), got {images.shape}")
    return images.reshape(images.shape[0], -1)


def raw_pixels() -> Representation:
    """The pixels as codes, (n, C*64*64): d = 4096 for dSprites, so metrics that fit one model
    per dimension (SAP, DCI) are slow on it; the beta-VAE and FactorVAE scores and MIG are fine."""
    return Representation("raw pixels", _flatten, dim=64 * 64)


def _training_images(dataset, num_images: int, seed: int) -> np.ndarray:
    if not is_int(num_images) \
            or num_images < 2:
        raise ValueError(f"num_images must be an integer >= 2, got {num_images!r}")
    if not (hasattr(dataset, "images") and hasattr(dataset, "__len__")):
        raise TypeError(f"dataset must be a bvae_lib dataset (e.g. DSprites(), or an image tensor "
                        f"wrapped in bvae_lib.data.TensorImages), got {type(dataset).__name__}")
    generator = torch.Generator().manual_seed(seed)
    if hasattr(dataset, "sample_factors"):
        images = dataset.images_from_factors(dataset.sample_factors(num_images, generator))
    else:   # a plain image dataset (TensorImages)
        idx = torch.randint(0, len(dataset), (num_images,), generator=generator)
        images = dataset.images(idx)
    return _flatten(images)


def _check_components(num_components, num_images) -> int:
    if not is_int(num_components) \
            or not 1 <= num_components <= num_images:
        raise ValueError(f"num_components must be an integer in [1, num_images={num_images}], "
                         f"got {num_components!r}")
    return int(num_components)


def fit_pca(dataset, num_components: int = 10, num_images: int = 10_000,
            seed: int = 0) -> Representation:
    """PCA on ``num_images`` random images of ``dataset``; codes are the ``num_components``
    (default 10, the VAEs' d) principal-component scores."""
    num_components = _check_components(num_components, num_images)
    x = _training_images(dataset, num_images, seed)
    pca = PCA(n_components=num_components, random_state=seed).fit(x)
    return Representation(f"PCA ({num_components})", lambda im: pca.transform(_flatten(im)),
                          dim=num_components, model=pca)


def fit_ica(dataset, num_components: int = 10, num_images: int = 10_000,
            seed: int = 0, max_iter: int = 10_000, tol: float = 1e-12) -> Representation:
    """FastICA on ``num_images`` random images; codes are the ``num_components`` estimated
    sources.

    FastICA first whitens the data onto its top ``num_components`` principal directions; we do
    that projection with a randomised PCA (the same subspace, minutes faster than FastICA's full
    SVD of a 10,000 x 4096 matrix) and run FastICA on the projected data.

    FastICA's fixed-point iteration converges linearly, and scikit-learn stops it at ``tol=1e-4``
    by default: where it stops then depends on the last bits of the BLAS kernels, and the
    sources (and the β-VAE metric of them: two points of 100 on dSprites) move with the CPU.
    Here it runs in float64 to ``tol=1e-12`` (about 100-450 iterations for 1,000-10,000 images,
    a second or ten), from the initialisation that ``seed`` fixes, so the result is the fixed
    point itself and the same on any CPU.
    """
    num_components = _check_components(num_components, num_images)
    x = _training_images(dataset, num_images, seed).astype(np.float64)
    ica = make_pipeline(
        PCA(n_components=num_components, svd_solver="randomized", random_state=seed),
        FastICA(n_components=num_components, whiten="unit-variance", random_state=seed,
                max_iter=max_iter, tol=tol)).fit(x)
    return Representation(f"ICA ({num_components})",
                          lambda im: ica.transform(_flatten(im).astype(np.float64)),
                          dim=num_components, model=ica)


def untrained_encoder(model_config=None, seed: int = 0, device=None) -> Representation:
    """The posterior means of a freshly initialised VAE (default ``ModelConfig()``: the Burgess
    encoder, d = 10), initialised from ``seed`` without touching the global RNG."""
    from .models import ModelConfig, build_model   # imported here: models is optional to metrics

    config = ModelConfig() if model_config is None else model_config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(config)
    model = model.to(device if device is not None else "cpu").eval()
    return Representation(f"untrained {config.architecture} encoder", model.representation,
                          dim=config.code_dim, model=model)


def identity(observations):
    """The identity representation: with :class:`IdentityObservations` its codes are the true
    factors."""
    return observations


class IdentityObservations(GroundTruthDataset):
    """A ground-truth dataset whose observations are the factor classes, float32 ``(n, K)``.

    Same protocol as :class:`bvae_lib.data.DSprites` (sampling, indexing) on any factor grid;
    default: the dSprites grid. Use it to score known representations -- the true factors
    (:func:`identity`), a permutation, a copy of a factor, noise -- without an encoder.
    """

    def __init__(self, factor_sizes: Sequence[int] = (3, 6, 40, 32, 32),
                 factor_names: Sequence[str] | None = None, device=None):
        sizes = tuple(int(s) for s in factor_sizes)
        if not sizes or any(s < 1 for s in sizes):
            raise ValueError(f"factor_sizes must be positive integers, got {factor_sizes!r}")
        names = (tuple(factor_names) if factor_names is not None
                 else ("shape", "scale", "orientation", "position_x", "position_y")
                 if sizes == (3, 6, 40, 32, 32) else tuple(f"v{k}" for k in range(len(sizes))))
        if len(names) != len(sizes):
            raise ValueError(f"factor_names has {len(names)} names for {len(sizes)} factors")
        self.factor_sizes, self.factor_names = sizes, names
        self.device = torch.device(device) if device is not None else torch.device("cpu")

    def images_from_factors(self, factors) -> torch.Tensor:
        return self._check_factors(factors).to(torch.float32)
