"""Which latent carries which factor: the measures a traversal figure is read with.

MIG (``mig.py``) condenses a code into one number. To *show* a disentangled model -- "this latent
moves x, that one the scale" -- a reader needs, per factor, its best latent and how far ahead of
the next one it is; for a categorical latent, how well its categories match a factor's classes;
and, before any of that, whether the reconstructions keep the factor at all. Each function here
is that one measure on arrays, so the book, the tests and the zoo's checks compute it the same
way.

* :func:`factor_alignment` -- normalised mutual information NMI(z_j; v_k) = I(z_j; v_k) / H(v_k)
  (the histogram estimator of MIG: 20 equal-width bins, disentanglement_lib), and for each factor
  its best latent, that NMI and the gap to the second-best latent (MIG's gap, per factor, with
  the latents named);
* :func:`matched_accuracy` -- the accuracy of the best one-to-one matching of categories to
  classes (Hungarian algorithm): a categorical latent's categories carry no names;
* :func:`shape_in_reconstruction` -- the fraction of reconstructions nearer (L2) to their own
  pose drawn as their true shape than as any other shape: does the decoder draw the shape?

(The order in which latents switch on during training is read from a run's history by
:func:`bvae_lib.viz.switch_on_steps`.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ._mig import mig_from_codes
from .utils import check_int

__all__ = ["Alignment", "factor_alignment", "MatchedAccuracy", "matched_accuracy",
           "shape_in_reconstruction"]


@dataclass
class Alignment:
    """Result of :func:`factor_alignment`; arrays are indexed by factor."""
    nmi: np.ndarray               # (d, K) I(z_j; v_k) / H(v_k)
    best: np.ndarray              # (K,) the latent with the largest NMI for each factor
    best_nmi: np.ndarray          # (K,) that NMI
    gap: np.ndarray               # (K,) best NMI minus the second best (0 with one latent)
    factors: tuple[str, ...]

    def table(self) -> str:
        """One line per factor: its best latent, the NMI and the gap."""
        return "\n".join(f"{name:12s} z_{j:<3d} NMI {n:.2f}  gap {g:.2f}" for name, j, n, g in
                         zip(self.factors, self.best, self.best_nmi, self.gap))


def factor_alignment(codes, factor_classes, factor_names: Sequence[str] | None = None,
                     num_bins: int = 20) -> Alignment:
    """NMI of every latent with every factor, and each factor's best latent and gap.

    ``codes`` (n, d), ``factor_classes`` (n, K) integers; the estimator is MIG's histogram one
    (:func:`bvae_lib.metrics.mig_from_codes`), so ``gap`` averaged over the factors is MIG."""
    info = mig_from_codes(codes, factor_classes, num_bins=num_bins)
    nmi = info.mutual_info / info.factor_entropy
    order = np.argsort(-nmi, axis=0, kind="stable")
    k = np.arange(nmi.shape[1])
    best = order[0]
    second = nmi[order[1], k] if nmi.shape[0] > 1 else np.zeros(nmi.shape[1])
    names = tuple(factor_names) if factor_names is not None else info.factors
    if len(names) != nmi.shape[1]:
        raise ValueError(f"factor_names has {len(names)} names for {nmi.shape[1]} factor columns")
    return Alignment(nmi=nmi, best=best, best_nmi=nmi[best, k], gap=nmi[best, k] - second,
                     factors=names)


@dataclass
class MatchedAccuracy:
    """Result of :func:`matched_accuracy`."""
    accuracy: float               # matched counts / all
    counts: np.ndarray            # (categories, classes) table of counts
    matching: dict                # category -> class of the best matching


def matched_accuracy(categories, labels, num_categories: int | None = None,
                     num_classes: int | None = None) -> MatchedAccuracy:
    """Accuracy of the best one-to-one matching of ``categories`` to ``labels`` (integer arrays
    of equal length): the table of counts is matched by the Hungarian algorithm
    (``scipy.optimize.linear_sum_assignment``), maximising the matched counts. Categories that
    ignore the labels still score above ``1 / num_classes``: compare with the same statistic
    on permuted labels."""
    from scipy.optimize import linear_sum_assignment

    c = np.asarray(categories)
    y = np.asarray(labels)
    for name, a in (("categories", c), ("labels", y)):
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must be a 1-d integer array, got dtype {a.dtype} and "
                             f"shape {a.shape}")
        if a.size and a.min() < 0:
            raise ValueError(f"{name} must be non-negative class indices, got {a.min()}")
    if c.shape != y.shape or c.size == 0:
        raise ValueError(f"categories and labels must be non-empty and of equal length, got "
                         f"{c.shape} and {y.shape}")
    kc = check_int(num_categories, "num_categories") if num_categories else int(c.max()) + 1
    ky = check_int(num_classes, "num_classes") if num_classes else int(y.max()) + 1
    if c.max() >= kc or y.max() >= ky:
        raise ValueError(f"a category or label exceeds num_categories={kc} / num_classes={ky}")
    counts = np.zeros((kc, ky), dtype=np.int64)
    np.add.at(counts, (c, y), 1)
    rows, cols = linear_sum_assignment(-counts)
    return MatchedAccuracy(accuracy=float(counts[rows, cols].sum() / counts.sum()),
                           counts=counts, matching=dict(zip(rows.tolist(), cols.tolist())))


def shape_in_reconstruction(reconstructions, factor_classes, dataset,
                            factor: str = "shape") -> float:
    """Fraction of ``reconstructions`` (n, 1, 64, 64, pixel probabilities) that are nearer in L2
    to their image's pose drawn with its true ``factor`` class than with any other class.

    ``factor_classes`` (n, K) are the images' factors and ``dataset`` renders any combination
    (``images_from_factors``). Chance is 1 / (number of classes); a decoder that draws every
    sprite as the same blur scores about chance."""
    if factor not in dataset.factor_names:
        raise ValueError(f"factor {factor!r} is not one of the dataset's factors "
                         f"{dataset.factor_names}")
    k = dataset.factor_names.index(factor)
    f = torch.as_tensor(np.asarray(factor_classes), dtype=torch.long)
    r = torch.as_tensor(reconstructions, dtype=torch.float32)
    if (r.ndim != 4 or r.shape[0] == 0 or f.ndim != 2 or len(f) != r.shape[0]
            or f.shape[1] != dataset.num_factors):
        raise ValueError(f"expected n reconstructions (n, C, 64, 64) and their factor classes "
                         f"(n, {dataset.num_factors}), got {tuple(r.shape)} and {tuple(f.shape)}")
    r = r.reshape(len(f), -1)
    if not torch.isfinite(r).all() or r.min() < 0 or r.max() > 1:
        raise ValueError("reconstructions must be pixel probabilities in [0, 1] (apply "
                         "torch.sigmoid to a Bernoulli decoder's logits)")
    distances = []
    for value in range(dataset.factor_sizes[k]):
        g = f.clone()
        g[:, k] = value
        drawn = dataset.images_from_factors(g.to(dataset.device)).cpu().reshape(len(f), -1)
        distances.append(((r - drawn) ** 2).sum(1))
    nearest = torch.stack(distances, 1).argmin(1)
    return float((nearest == f[:, k]).float().mean())
