"""The FactorVAE score (Kim & Mnih 2018, "Disentangling by Factorising", Sec. 3).

Kim & Mnih's fix for the beta-VAE metric. One *vote* is made like this:

1. choose a factor k; draw L = ``images_per_vote`` images that all share one value of v_k and are
   random elsewhere;
2. divide each code dimension by its standard deviation over the whole data (so units do not
   matter) and take the empirical variance of each dimension over the L codes;
3. the dimension with the *smallest* normalised variance votes for factor k.

The classifier is a majority vote: each dimension predicts the factor it most often voted for,
and the score is the fraction of held-out votes it gets right. Unlike the beta-VAE metric, a
factor that no dimension captures cannot be recognised by "no dimension is small": its votes go
to some dimension that belongs to another factor, and the score drops.

Defaults (disentanglement_lib's factor_vae.gin; Kim & Mnih use the same numbers): L = 64
images a vote, ``num_train=10_000`` and ``num_eval=5_000`` votes, variances over the data from
``num_variance_estimate=10_000`` images. Cost: 64 x 15,000 + 10,000 = 970,000 images encoded.

Pruning: Kim & Mnih remove dimensions that collapsed to the prior, whose tiny variance would
otherwise make noise. disentanglement_lib's ``_prune_dims(threshold=0.)`` keeps every dimension
(``std >= 0``), which lets a constant dimension's 0/0 = NaN win the argmin. We drop dimensions
whose standard deviation over the data is ``<= prune_threshold`` (default 0: constant ones only,
so the score stays invariant to rescaling a dimension); pass e.g. 0.05 for a VAE's collapsed
means. A representation with no active dimension scores 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .utils import (RENDER_CHUNK, RepresentationFn, check_int, encode, encode_factors,
                    make_generator, renamed_batch_size, resolve_fixed_factors)


@dataclass(frozen=True)
class FactorVAEResult:
    """Result of :func:`factor_vae_score`; ``score`` is the held-out vote accuracy."""
    score: float
    train_accuracy: float
    eval_accuracy: float
    votes: np.ndarray            # (d_active, F) training votes: dimension x fixed factor
    active_dims: np.ndarray      # indices of the dimensions that vote
    global_std: np.ndarray       # (d,) std of each dimension over the data
    factors: tuple[str, ...]
    num_images: int


def factor_vae_score(representation: RepresentationFn, dataset,
                     factors: "Sequence[str | int] | None" = None, images_per_vote: int = 64,
                     num_train: int = 10_000, num_eval: int = 5_000,
                     num_variance_estimate: int = 10_000, prune_threshold: float = 0.0,
                     seed: int = 0, encode_batch_size: int = 256, *,
                     batch_size: None = None) -> FactorVAEResult:
    """The FactorVAE score of ``representation`` on ``dataset`` (see the module docstring).

    ``factors``: which factors are fixed in votes (``None``: all, as Kim & Mnih and
    disentanglement_lib). Defaults encode 970,000 images:
    ``images_per_vote * (num_train + num_eval) + num_variance_estimate``.
    """
    factor_idx = resolve_fixed_factors(dataset, factors, "FactorVAE score")
    renamed_batch_size(batch_size, "images_per_vote", "L, the images of one vote")
    L = check_int(images_per_vote, "images_per_vote", minimum=2)
    num_train = check_int(num_train, "num_train")
    num_eval = check_int(num_eval, "num_eval")
    num_var = check_int(num_variance_estimate, "num_variance_estimate", minimum=2)
    encode_batch_size = check_int(encode_batch_size, "encode_batch_size")
    if not (isinstance(prune_threshold, (int, float, np.integer, np.floating))
            and 0 <= prune_threshold < np.inf):       # "not >=" would let NaN through
        raise ValueError(f"prune_threshold must be a finite number >= 0, got "
                         f"{prune_threshold!r}")
    generator = make_generator(seed)
    names = tuple(dataset.factor_names[k] for k in factor_idx)
    num_images = L * (num_train + num_eval) + num_var

    codes = encode_factors(representation, dataset, dataset.sample_factors(num_var, generator),
                           encode_batch_size)
    global_std = codes.std(axis=0, ddof=1)
    active = np.flatnonzero(global_std > prune_threshold)
    F = len(factor_idx)
    if active.size == 0:
        return FactorVAEResult(0.0, 0.0, 0.0, np.zeros((0, F), np.int64), active, global_std,
                              names, num_images)

    train = _votes(representation, dataset, factor_idx, L, num_train, generator, global_std,
                   active, encode_batch_size)
    evals = _votes(representation, dataset, factor_idx, L, num_eval, generator, global_std,
                   active, encode_batch_size)
    classifier = np.argmax(train, axis=1)             # the factor each dimension stands for
    rows = np.arange(len(active))
    train_acc = float(train[rows, classifier].sum() / train.sum())
    eval_acc = float(evals[rows, classifier].sum() / evals.sum())
    return FactorVAEResult(eval_acc, train_acc, eval_acc, train, active, global_std, names,
                          num_images)


def _votes(representation, dataset, factor_idx, L, num_votes, generator, global_std, active,
           encode_batch_size) -> np.ndarray:
    """Vote counts (d_active, F): how often each active dimension had the smallest normalised
    variance when factor ``factor_idx[f]`` was fixed."""
    votes = np.zeros((len(active), len(factor_idx)), dtype=np.int64)
    allowed = torch.tensor(factor_idx)
    per_chunk = max(1, RENDER_CHUNK // L)
    for start in range(0, num_votes, per_chunk):
        P = min(per_chunk, num_votes - start)
        label = torch.randint(0, len(factor_idx), (P,), generator=generator)
        v = dataset.sample_factors(P * L, generator).cpu().view(P, L, -1)
        fixed = allowed[label]
        # Every image of a vote takes the value its first image has for the fixed factor.
        value = v[torch.arange(P), 0, fixed]
        v[torch.arange(P), :, fixed] = value[:, None]
        images = dataset.images_from_factors(v.view(P * L, -1).to(dataset.device))
        z = encode(representation, images, encode_batch_size)[:, active] / global_std[active]
        local_var = z.reshape(P, L, -1).var(axis=1, ddof=1)
        np.add.at(votes, (np.argmin(local_var, axis=1), label.numpy()), 1)
    return votes
