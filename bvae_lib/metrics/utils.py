"""Shared machinery of the metrics: seeds, factor sets, encoding in batches, discrete MI.

Every metric follows the same path (the separation disentanglement_lib made standard):

    factors  --dataset.images_from_factors-->  images  --representation-->  codes  --> statistic

The dataset renders images where it lives (CPU or GPU), in large chunks so rendering costs
little per image; the representation sees batches of ``batch_size`` images under
``torch.no_grad()``; its codes come back to the CPU as float64 numpy arrays, where the
statistics (classifiers, histograms) run.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from .._validate import is_int

#: Images rendered at once. Large enough that the renderer's per-call overhead vanishes,
#: small enough to stay bounded in memory: 8192 x 64 x 64 float32 is 128 MB.
RENDER_CHUNK = 8192

#: What every metric scores: any callable images -> codes ``(n, d)``, torch or numpy
#: (``model.representation``, a fitted PCA, a lambda). :class:`bvae_lib.baselines.Representation`
#: is one such callable that also carries a name and a dimension.
RepresentationFn = Callable[[torch.Tensor], "torch.Tensor | np.ndarray"]


# -- argument checks --------------------------------------------------------------------------

def renamed_batch_size(batch_size, new_name: str, meaning: str) -> None:
    """Refuse the old name of L in the beta-VAE metric and the FactorVAE score: ``batch_size``
    means the encoding batch in every other metric, so it is not silently accepted here."""
    if batch_size is not None:
        raise TypeError(f"batch_size is not an argument here: pass {new_name}={batch_size!r} for "
                        f"{meaning} (earlier versions called it batch_size), or "
                        f"encode_batch_size for how many images are encoded at once")


def check_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, or a ValueError naming the argument."""
    if not is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def make_generator(seed: int) -> torch.Generator:
    """A CPU torch.Generator seeded with ``seed``: all factor sampling goes through it, so the
    same seed gives the same factors (and so the same score) on any device."""
    if not is_int(seed):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return torch.Generator().manual_seed(int(seed))


def sklearn_seed(generator: torch.Generator) -> int:
    """An integer ``random_state`` for scikit-learn, drawn from the metric's generator."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


def check_ground_truth(dataset) -> None:
    """The metrics score codes against known factors: refuse a dataset that has none (e.g.
    ``TensorImages`` of MNIST) before anything is encoded."""
    needed = ("factor_names", "factor_sizes", "sample_factors", "images_from_factors")
    missing = [a for a in needed if not hasattr(dataset, a)]
    if missing:
        raise TypeError(f"the metrics need a ground-truth dataset, whose factors are known "
                        f"({', '.join(needed)}: bvae_lib.data.DSprites, DSpritesFile, ...); "
                        f"got {type(dataset).__name__}, which lacks {', '.join(missing)}")


def resolve_factors(dataset, factors: "Sequence[str | int] | None") -> list[int]:
    """Factor names or indices -> sorted list of factor indices; ``None`` means all factors."""
    check_ground_truth(dataset)
    names = tuple(dataset.factor_names)
    if factors is None:
        return list(range(len(names)))
    if isinstance(factors, (str, int)):
        factors = [factors]
    out = []
    for f in factors:
        if isinstance(f, str):
            if f not in names:
                raise ValueError(f"factor '{f}' does not exist in this dataset; "
                                 f"choose among {names} (or pass their indices)")
            out.append(names.index(f))
        elif is_int(f):
            if not 0 <= f < len(names):
                raise ValueError(f"factor index {f} is out of range: the dataset has "
                                 f"{len(names)} factors {names}")
            out.append(int(f))
        else:
            raise TypeError(f"factors must be names or indices, got {f!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"factors lists a factor twice: {list(factors)}")
    if not out:
        raise ValueError("factors is empty; pass None for all factors")
    return sorted(out)


def resolve_fixed_factors(dataset, factors, metric: str) -> list[int]:
    """The factor set of a metric that classifies *which* factor was held fixed (the beta-VAE
    metric, the FactorVAE score): at least two factors, each with at least two values. With
    one factor every guess is right, so pure noise scores 1; a factor with a single value is
    "fixed" in every sample, so nothing can recognise it."""
    idx = resolve_factors(dataset, factors)
    names = [dataset.factor_names[k] for k in idx]
    if len(idx) < 2:
        raise ValueError(f"the {metric} classifies which factor was fixed, so it needs at least "
                         f"2 factors; got {names} (with one, every guess is right and any "
                         f"representation scores 1)")
    constant = [dataset.factor_names[k] for k in idx if dataset.factor_sizes[k] < 2]
    if constant:
        keep = [n for n in names if n not in constant]
        raise ValueError(f"factor {', '.join(map(repr, constant))} has a single value in this "
                         f"dataset, so fixing it fixes nothing and no code can reveal it; leave "
                         f"it out, e.g. factors={tuple(keep)}")
    return idx


def check_codes(codes, name: str = "codes") -> np.ndarray:
    """Codes as a finite float64 array (n, d), d >= 1."""
    if isinstance(codes, torch.Tensor):
        codes = codes.detach().cpu().numpy()
    arr = np.asarray(codes, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} have no dimensions (shape {arr.shape}); the representation "
                         f"must return at least one code dimension per image")
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name} contain NaN or infinite values (first at row {bad[0]}, "
                         f"dimension {bad[1]}); check the encoder (a diverged model?)")
    return arr


def check_factor_classes(classes, n: int, name: str = "factor_classes") -> np.ndarray:
    """Factor classes as an int64 array (n, K) matching ``n`` codes."""
    if isinstance(classes, torch.Tensor):
        classes = classes.detach().cpu().numpy()
    arr = np.asarray(classes)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (n, K), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integer class indices, got dtype {arr.dtype}; "
                        f"use the dataset's factor classes, not continuous factor values")
    if arr.shape[0] != n:
        raise ValueError(f"codes and {name} must have the same length, got {n} codes and "
                         f"{arr.shape[0]} rows of factors")
    return arr.astype(np.int64)


def check_varying_factors(classes: np.ndarray) -> None:
    """A classifier (or a regression) per factor column needs at least two classes in its
    training points."""
    for k in range(classes.shape[1]):
        if len(np.unique(classes[:, k])) < 2:
            raise ValueError(f"factor column {k} is constant in the training points; drop it")


# -- encoding ---------------------------------------------------------------------------------

def _to_numpy(out, n: int) -> np.ndarray:
    if isinstance(out, (tuple, list)):
        raise TypeError("the representation returned a tuple; this metric needs codes (n, d). "
                        "Pass model.representation (the means), or lambda x: model.encode(x)[0]")
    if isinstance(out, torch.Tensor):
        out = out.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(out, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"the representation must map {n} images to codes of shape ({n}, d), "
                         f"got shape {arr.shape}")
    return arr


def encode(representation: RepresentationFn, images: torch.Tensor, batch_size: int = 256
           ) -> np.ndarray:
    """Codes ``(n, d)`` float64 of ``images``, in batches of ``batch_size``, without gradients."""
    n = images.shape[0]
    parts = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            batch = images[start:start + batch_size]
            parts.append(_to_numpy(representation(batch), batch.shape[0]))
    if not parts:
        raise ValueError("no images to encode")
    codes = np.concatenate(parts)
    return check_codes(codes, "the representation's codes")


def encode_factors(representation: RepresentationFn, dataset, factors: torch.Tensor,
                   batch_size: int = 256) -> np.ndarray:
    """Codes of the images of ``factors`` (n, K): rendered in chunks of RENDER_CHUNK images on
    the dataset's device, encoded in batches of ``batch_size``."""
    parts = []
    chunk = max(RENDER_CHUNK, batch_size)
    for start in range(0, factors.shape[0], chunk):
        images = dataset.images_from_factors(factors[start:start + chunk])
        parts.append(encode(representation, images, batch_size))
    return np.concatenate(parts)


def encode_gaussian(representation, images: torch.Tensor, batch_size: int = 256):
    """``(mu, logvar)`` of q(z|x), each (n, d) on the images' device, for a representation that
    returns the pair (e.g. ``model.encode``)."""
    mus, logvars = [], []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            out = representation(images[start:start + batch_size])
            if not isinstance(out, (tuple, list)) or len(out) != 2:
                raise TypeError(
                    "this estimator needs the posterior q(z|x): the representation must return "
                    "a pair (mu, logvar), e.g. model.encode, not codes alone")
            mu, logvar = (torch.as_tensor(t, device=images.device) for t in out)
            if mu.shape != logvar.shape or mu.dim() != 2:
                raise ValueError(f"mu and logvar must both have shape (n, d), got "
                                 f"{tuple(mu.shape)} and {tuple(logvar.shape)}")
            mus.append(mu.to(torch.float64))
            logvars.append(logvar.to(torch.float64))
    mu, logvar = torch.cat(mus), torch.cat(logvars)
    if not (torch.isfinite(mu).all() and torch.isfinite(logvar).all()):
        raise ValueError("mu or logvar contain NaN or infinite values; check the encoder")
    return mu, logvar


def sample_codes(representation: RepresentationFn, dataset, num_points: int,
                 generator: torch.Generator, batch_size: int = 256):
    """``num_points`` uniformly drawn factor combinations and their codes:
    ``(codes (n, d) float64, factor classes (n, K) int64)``, both numpy."""
    factors = dataset.sample_factors(num_points, generator)
    codes = encode_factors(representation, dataset, factors, batch_size)
    return codes, factors.cpu().numpy()


def train_test_codes(representation: RepresentationFn, dataset, factors, num_train: int,
                     num_test: int, seed: int, batch_size: int = 256):
    """The common start of the classifier-based metrics (DCI, SAP): resolve the factor set, then
    encode ``num_train`` and ``num_test`` random images. Returns
    ``(names, z_train, v_train, z_test, v_test, sklearn_seed)``, with only the chosen factors'
    columns in ``v_*``."""
    factor_idx = resolve_factors(dataset, factors)
    num_train = check_int(num_train, "num_train", minimum=2)
    num_test = check_int(num_test, "num_test")
    generator = make_generator(seed)
    z_train, v_train = sample_codes(representation, dataset, num_train, generator, batch_size)
    z_test, v_test = sample_codes(representation, dataset, num_test, generator, batch_size)
    names = tuple(dataset.factor_names[k] for k in factor_idx)
    return (names, z_train, v_train[:, factor_idx], z_test, v_test[:, factor_idx],
            sklearn_seed(generator))


# -- discretisation and discrete information --------------------------------------------------

def histogram_discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Each code dimension cut into ``num_bins`` equal-width bins between its min and max.

    As disentanglement_lib's ``_histogram_discretize``: ``np.digitize(c, np.histogram(c,
    num_bins)[1][:-1])``, so bins are numbered 1..num_bins (the maximum lands in the last bin).
    A constant dimension falls in a single bin (it carries no information).
    """
    codes = check_codes(codes)
    out = np.empty(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], num_bins)[1][:-1]
        out[:, j] = np.digitize(codes[:, j], edges)
    return out


def _dense_labels(a: np.ndarray) -> tuple[np.ndarray, int]:
    values, inverse = np.unique(a, return_inverse=True)
    return inverse.reshape(-1), len(values)


def discrete_entropy(classes: np.ndarray) -> np.ndarray:
    """Empirical entropy (nats) of each column of an integer array (n, K)."""
    classes = np.asarray(classes)
    out = np.empty(classes.shape[1])
    for k in range(classes.shape[1]):
        counts = np.bincount(_dense_labels(classes[:, k])[0]).astype(np.float64)
        p = counts / counts.sum()
        out[k] = -np.sum(p * np.log(p))
    return out


def discrete_mutual_info(codes_discrete: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Empirical mutual information (nats) between every code column and every factor column,
    a matrix (d, K); the same number as ``sklearn.metrics.mutual_info_score`` (tested), computed
    from one joint histogram per pair."""
    codes_discrete, classes = np.asarray(codes_discrete), np.asarray(classes)
    n, d = codes_discrete.shape
    out = np.zeros((d, classes.shape[1]))
    code_labels = [_dense_labels(codes_discrete[:, j]) for j in range(d)]
    for k in range(classes.shape[1]):
        y, ny = _dense_labels(classes[:, k])
        py = np.bincount(y, minlength=ny) / n
        for j, (z, nz) in enumerate(code_labels):
            joint = np.bincount(z * ny + y, minlength=nz * ny).reshape(nz, ny) / n
            pz = joint.sum(axis=1)
            nonzero = joint > 0
            ratio = joint[nonzero] / (pz[:, None] * py[None, :])[nonzero]
            out[j, k] = max(0.0, float(np.sum(joint[nonzero] * np.log(ratio))))
    return out


def top_two_gap(matrix: np.ndarray) -> np.ndarray:
    """For a score matrix (d, K): per factor, the largest entry minus the second largest
    (the "gap" of MIG and SAP). With one code dimension the gap is the largest entry."""
    if matrix.shape[0] < 2:
        return matrix[0].copy()
    top = np.sort(matrix, axis=0)
    return top[-1] - top[-2]
