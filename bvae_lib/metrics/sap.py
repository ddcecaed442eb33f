"""SAP, the Separated Attribute Predictability score (Kumar et al. 2018, "Variational
inference of disentangled latent concepts from unlabeled observations", Sec. 4).

Score every pair (code dimension z_j, factor v_k) by how well z_j *alone* predicts v_k, giving
a matrix S (d, K); SAP is the mean over factors of the gap between the best and the second-best
dimension. Like MIG it rewards one dimension per factor, but with a predictor instead of
mutual information.

Two ways to score a pair, as in disentanglement_lib's sap_score.py:

* ``continuous_factors=True``: S_jk = R^2 of a linear regression of v_k on z_j, i.e. the squared
  correlation cov(z_j, v_k)^2 / (var z_j var v_k) (Kumar's choice for continuous factors);
* ``continuous_factors=False`` (default, as disentanglement_lib for dSprites): S_jk = held-out
  accuracy of ``sklearn.svm.LinearSVC(C=0.01, class_weight="balanced")`` predicting the class
  of v_k from z_j (Kumar's "balanced classification accuracy" for categorical factors).
  We solve the SVM in its primal form (``dual=False``): the same optimisation problem as
  disentanglement_lib's default dual solver, about 25% faster with one feature and thousands of
  points; the d x K fits run on ``torch.get_num_threads()`` threads.
  A linear classifier on one number separates ordered classes only roughly, so even perfect
  codes score well below 1 on factors with many classes (40 orientations).

Defaults (disentanglement_lib's sap_score.gin): ``num_train=10_000``, ``num_test=5_000``
images; cost 15,000 images encoded. A dimension with (near) zero variance scores 0.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from sklearn.svm import LinearSVC

from .utils import (Representation, check_codes, check_factor_classes, top_two_gap,
                    train_test_codes)


@dataclass(frozen=True)
class SAPResult:
    """Result of :func:`sap`: ``score`` is the mean of ``gaps``."""
    score: float
    gaps: np.ndarray              # (K,) best minus second-best dimension, per factor
    score_matrix: np.ndarray      # (d, K) S_jk
    factors: tuple[str, ...]
    continuous_factors: bool


def sap(representation: Representation, dataset, num_train: int = 10_000,
        num_test: int = 5_000, factors: "Sequence[str | int] | None" = None,
        continuous_factors: bool = False, seed: int = 0, batch_size: int = 256) -> SAPResult:
    """SAP of ``representation`` on ``dataset``: encodes ``num_train + num_test`` random images
    (15,000 at the defaults); see the module docstring."""
    names, z_train, v_train, z_test, v_test, clf_seed = train_test_codes(
        representation, dataset, factors, num_train, num_test, seed, batch_size)
    result = sap_from_codes(z_train, v_train, z_test, v_test, continuous_factors=continuous_factors, seed=clf_seed)
    return SAPResult(**{**result.__dict__, "factors": names})


def sap_from_codes(codes_train, factors_train, codes_test=None, factors_test=None,
                   continuous_factors: bool = False, seed: int = 0) -> SAPResult:
    """SAP from arrays: codes (n, d) and integer factor classes (n, K). The test arrays are
    needed for discrete factors (held-out accuracy); R^2 uses the training arrays only."""
    z = check_codes(codes_train, "codes_train")
    v = check_factor_classes(factors_train, z.shape[0], "factors_train")
    d, K = z.shape[1], v.shape[1]
    S = np.zeros((d, K))
    if continuous_factors:
        var_z = z.var(axis=0, ddof=1)
        var_v = v.var(axis=0, ddof=1)
        cov = (z - z.mean(0)).T @ (v - v.mean(0)) / (z.shape[0] - 1)          # (d, K)
        ok = (var_z > 1e-12)[:, None] & (var_v > 0)[None, :]
        S = np.where(ok, cov**2 / np.where(ok, np.outer(var_z, var_v), 1.0), 0.0)
    else:
        if codes_test is None or factors_test is None:
            raise ValueError("discrete factors are scored by held-out accuracy: pass codes_test "
                             "and factors_test (or continuous_factors=True)")
        z_test = check_codes(codes_test, "codes_test")
        v_test = check_factor_classes(factors_test, z_test.shape[0], "factors_test")
        if z_test.shape[1] != d or v_test.shape[1] != K:
            raise ValueError(f"test arrays must have {d} code and {K} factor columns, got "
                             f"{z_test.shape[1]} and {v_test.shape[1]}")
        def pair_accuracy(jk):
            j, k = jk
            clf = LinearSVC(C=0.01, class_weight="balanced", dual=False, random_state=seed)
            clf.fit(z[:, j:j + 1], v[:, k])
            return np.mean(clf.predict(z_test[:, j:j + 1]) == v_test[:, k])

        # A constant dimension predicts nothing and keeps S_jk = 0.
        pairs = [(j, k) for j in range(d) if z[:, j].var() > 1e-12 for k in range(K)]
        workers = max(1, min(len(pairs), torch.get_num_threads()))
        with ThreadPoolExecutor(workers) as pool:   # liblinear releases the GIL
            for (j, k), acc in zip(pairs, pool.map(pair_accuracy, pairs)):
                S[j, k] = acc
    gaps = top_two_gap(S)
    return SAPResult(score=float(np.mean(gaps)), gaps=gaps, score_matrix=S,
                     factors=tuple(f"factor {k}" for k in range(K)),
                     continuous_factors=bool(continuous_factors))
