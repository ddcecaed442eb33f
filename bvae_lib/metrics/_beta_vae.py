"""The beta-VAE metric (Higgins et al. 2017, Sec. 3 and Appendix A.4).

One *point* of the metric's training set is made like this:

1. choose a factor y (uniformly among the scored factors);
2. draw L pairs of factor combinations (v1, v2) that agree on factor y and are independent
   elsewhere; render and encode them, z1 = r(x(v1)), z2 = r(x(v2));
3. the feature is the average absolute difference ``z_diff = mean_l |z1_l - z2_l|`` (d,).

A linear classifier then predicts y from z_diff. If one code dimension captures y alone, that
dimension of z_diff is near zero exactly when y is fixed, and a linear classifier finds it. The
score is the classifier's accuracy on held-out points; chance is 1/(number of factors).

Kim & Mnih (2018) point out the weakness this module's tests demonstrate: a representation that
captures K - 1 factors and ignores the last one still scores 100%, because "no dimension is
small" is itself a linearly separable signature of the missing factor.

Defaults (and their source):

* ``pairs_per_point=64`` (Higgins: L = 64; disentanglement_lib calls it ``batch_size``),
  ``num_train=10_000`` and ``num_eval=5_000`` points (disentanglement_lib's beta_vae.gin);
* a logistic-regression classifier (disentanglement_lib: ``sklearn.linear_model.
  LogisticRegression``; Higgins trained a linear softmax classifier with Adagrad);
* factors: scale, orientation, position x and position y, as in Higgins's dSprites experiments;
  disentanglement_lib also scores shape (``factors=None`` scores every factor of the dataset).

One deviation, and why: the features are standardised (zero mean, unit variance on the training
points) before the classifier. The regularised logistic regression is otherwise not invariant to
rescaling a code dimension, and a metric should not change when a latent is measured in other
units. With well-separated classes (the usual case) the two give the same accuracy. The price:
a collapsed encoder, whose means move only a little with the input, is scaled up too, so it can
score well above chance (1/K) -- read the metric together with the KL per latent.

Cost at the defaults: (10,000 + 5,000) points x 64 pairs x 2 images = 1,920,000 images encoded.
Pass smaller ``num_train``/``num_eval``/``pairs_per_point`` for a quick estimate (the book uses e.g.
``num_train=1000, num_eval=500``: 192,000 images).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from .utils import (RENDER_CHUNK, RepresentationFn, check_int, encode, make_generator,
                    renamed_batch_size, resolve_fixed_factors, sklearn_seed)

#: Higgins et al. (2017) score the dSprites factors other than shape.
HIGGINS_FACTORS = ("scale", "orientation", "position_x", "position_y")


@dataclass(frozen=True)
class BetaVAEResult:
    """Result of :func:`beta_vae_score`; ``score`` is the held-out accuracy."""
    score: float
    train_accuracy: float
    eval_accuracy: float
    factors: tuple[str, ...]          # the factors the classifier chooses among
    confusion: np.ndarray             # (F, F) held-out counts, rows = fixed factor, cols = predicted
    num_images: int                   # images encoded


def beta_vae_score(representation: RepresentationFn, dataset,
                   factors: "Sequence[str | int] | None" = HIGGINS_FACTORS,
                   pairs_per_point: int = 64, num_train: int = 10_000, num_eval: int = 5_000,
                   seed: int = 0, encode_batch_size: int = 256, *,
                   batch_size: None = None) -> BetaVAEResult:
    """The beta-VAE metric of ``representation`` on ``dataset`` (see the module docstring).

    ``representation``: any callable images -> codes (n, d), torch or numpy. ``factors``: names
    or indices of the factors the classifier must tell apart (``None``: all of them); factors
    left out still vary freely in every pair. ``pairs_per_point`` is L, the number of pairs
    averaged per point; ``encode_batch_size`` only sets how many images are encoded at once.
    Defaults encode 1,920,000 images; cost is ``2 * L * (num_train + num_eval)``.
    """
    factor_idx = resolve_fixed_factors(dataset, factors, "beta-VAE metric")
    renamed_batch_size(batch_size, "pairs_per_point", "L, the pairs averaged per point")
    L = check_int(pairs_per_point, "pairs_per_point")
    num_train = check_int(num_train, "num_train")
    num_eval = check_int(num_eval, "num_eval")
    encode_batch_size = check_int(encode_batch_size, "encode_batch_size")
    generator = make_generator(seed)

    x_train, y_train = _points(representation, dataset, factor_idx, L, num_train, generator,
                               encode_batch_size)
    x_eval, y_eval = _points(representation, dataset, factor_idx, L, num_eval, generator,
                             encode_batch_size)
    if len(np.unique(y_train)) < 2:
        raise ValueError(f"num_train={num_train} points drew a single fixed factor; the "
                         f"classifier needs several: increase num_train")
    scaler = StandardScaler().fit(x_train)
    classifier = LogisticRegression(max_iter=1000, random_state=sklearn_seed(generator))
    classifier.fit(scaler.transform(x_train), y_train)
    train_acc = float(classifier.score(scaler.transform(x_train), y_train))
    predicted = classifier.predict(scaler.transform(x_eval))
    eval_acc = float(np.mean(predicted == y_eval))
    F = len(factor_idx)
    confusion = np.zeros((F, F), dtype=np.int64)
    np.add.at(confusion, (y_eval, predicted), 1)
    names = tuple(dataset.factor_names[k] for k in factor_idx)
    return BetaVAEResult(score=eval_acc, train_accuracy=train_acc, eval_accuracy=eval_acc,
                        factors=names, confusion=confusion,
                        num_images=2 * L * (num_train + num_eval))


def _points(representation, dataset, factor_idx, L, num_points, generator, encode_batch_size):
    """``num_points`` features (n, d) and labels (n,) in 0..F-1 (position in ``factor_idx``).

    Points are made in chunks of ``RENDER_CHUNK // (2 L)`` so that each chunk renders its
    2 L images per point in one call; the chunking is fixed, so the same seed gives the same
    factors whatever ``encode_batch_size`` is.
    """
    per_chunk = max(1, RENDER_CHUNK // (2 * L))
    allowed = torch.tensor(factor_idx)
    features, labels = [], []
    for start in range(0, num_points, per_chunk):
        P = min(per_chunk, num_points - start)
        label = torch.randint(0, len(factor_idx), (P,), generator=generator)
        fixed = allowed[label]                                          # factor index per point
        v1 = dataset.sample_factors(P * L, generator).cpu()
        v2 = dataset.sample_factors(P * L, generator).cpu()
        rows = torch.arange(P * L)
        col = fixed.repeat_interleave(L)
        v2[rows, col] = v1[rows, col]                                   # share factor y
        images = dataset.images_from_factors(torch.cat([v1, v2]).to(dataset.device))
        z = encode(representation, images, encode_batch_size)
        z1, z2 = z[:P * L], z[P * L:]
        features.append(np.abs(z1 - z2).reshape(P, L, -1).mean(axis=1))
        labels.append(label.numpy())
    return np.concatenate(features), np.concatenate(labels)
