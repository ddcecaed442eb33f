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
  A linear classifier on one number separates ordered classes only roughly, so even perfect
  codes score well below 1 on factors with many classes (40 orientations).

How the SVMs are solved (``solver``): ``"exact"`` (default) minimises LinearSVC's objective
for one feature exactly, by Newton's method on the sorted codes (``_sap_solver.py``: the
objective, the method and how it was checked against liblinear); ``"liblinear"`` fits
``LinearSVC(C=0.01, class_weight="balanced", dual=False)`` itself.

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

from ._sap_solver import SortedCodes, predict
from .utils import (RepresentationFn, check_codes, check_factor_classes, check_varying_factors,
                    top_two_gap, train_test_codes)

SOLVERS = ("exact", "liblinear")
SVM_C = 0.01                 # disentanglement_lib's sap_score: LinearSVC(C=0.01)


@dataclass(frozen=True)
class SAPResult:
    """Result of :func:`sap`: ``score`` is the mean of ``gaps``."""
    score: float
    gaps: np.ndarray              # (K,) best minus second-best dimension, per factor
    score_matrix: np.ndarray      # (d, K) S_jk
    factors: tuple[str, ...]
    continuous_factors: bool


def sap(representation: RepresentationFn, dataset, num_train: int = 10_000,
        num_test: int = 5_000, factors: "Sequence[str | int] | None" = None,
        continuous_factors: bool = False, seed: int = 0, batch_size: int = 256,
        solver: str = "exact") -> SAPResult:
    """SAP of ``representation`` on ``dataset``: encodes ``num_train + num_test`` random images
    (15,000 at the defaults); see the module docstring."""
    _check_solver(solver)
    names, z_train, v_train, z_test, v_test, clf_seed = train_test_codes(
        representation, dataset, factors, num_train, num_test, seed, batch_size)
    result = sap_from_codes(z_train, v_train, z_test, v_test,
                            continuous_factors=continuous_factors, seed=clf_seed, solver=solver)
    return SAPResult(**{**result.__dict__, "factors": names})


def sap_from_codes(codes_train, factors_train, codes_test=None, factors_test=None,
                   continuous_factors: bool = False, seed: int = 0,
                   solver: str = "exact") -> SAPResult:
    """SAP from arrays: codes (n, d) and integer factor classes (n, K). The test arrays are
    needed for discrete factors (held-out accuracy); R^2 uses the training arrays only.
    ``solver`` (discrete factors): ``"exact"`` or ``"liblinear"``, see the module docstring;
    ``seed`` only matters to liblinear."""
    _check_solver(solver)
    z = check_codes(codes_train, "codes_train")
    v = check_factor_classes(factors_train, z.shape[0], "factors_train")
    d, K = z.shape[1], v.shape[1]
    if z.shape[0] < 2:
        raise ValueError(f"SAP needs at least 2 training points (a variance or a classifier "
                         f"of one point is undefined), got {z.shape[0]}")
    # A constant factor has no R^2 and no classifier: refuse it in both modes (it used to score
    # 0 silently with continuous_factors=True).
    check_varying_factors(v)
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
        # A constant dimension predicts nothing and keeps S_jk = 0.
        live = [j for j in range(d) if z[:, j].var() > 1e-12]
        if solver == "exact":
            labels = [np.unique(v[:, k], return_inverse=True, return_counts=True)
                      for k in range(K)]
            for j in live:
                order = np.argsort(z[:, j], kind="stable")
                sorted_codes = SortedCodes(z[order, j])
                for k, (classes, index, counts) in enumerate(labels):
                    w, b = sorted_codes.fit(index.reshape(-1)[order], counts, SVM_C)
                    S[j, k] = np.mean(predict(z_test[:, j], classes, w, b) == v_test[:, k])
        else:
            def pair_accuracy(jk):
                j, k = jk
                clf = LinearSVC(C=SVM_C, class_weight="balanced", dual=False, random_state=seed)
                clf.fit(z[:, j:j + 1], v[:, k])
                return np.mean(clf.predict(z_test[:, j:j + 1]) == v_test[:, k])

            pairs = [(j, k) for j in live for k in range(K)]
            workers = max(1, min(len(pairs), torch.get_num_threads()))
            with ThreadPoolExecutor(workers) as pool:   # liblinear releases the GIL
                for (j, k), acc in zip(pairs, pool.map(pair_accuracy, pairs)):
                    S[j, k] = acc
    gaps = top_two_gap(S)
    return SAPResult(score=float(np.mean(gaps)), gaps=gaps, score_matrix=S,
                     factors=tuple(f"factor {k}" for k in range(K)),
                     continuous_factors=bool(continuous_factors))


def _check_solver(solver):
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
