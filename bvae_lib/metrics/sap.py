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

How the SVMs are solved (``solver``). LinearSVC minimises, for each class c against the rest
(one-vs-rest with three or more classes; a single problem with two),

    f(w, b) = (w^2 + b^2) / 2 + sum_i C_i max(0, 1 - y_i (w z_i + b))^2,

liblinear's squared hinge loss with the intercept as a regularised feature of value 1, where
C_i = C n / (|classes| n_c) for the points of class c (``class_weight="balanced"``) and C for
the rest. With one feature this is a strictly convex, piecewise quadratic function of two
numbers, and the points inside the margin are a prefix or a suffix of the codes sorted by
value. ``solver="exact"`` (default) sorts each code dimension once, keeps prefix sums of
(1, z, z^2) per class, and minimises every f by Newton's method with a backtracking line search
to a relative gradient of 1e-10, each step costing a few binary searches; it agrees with
liblinear run to a tight tolerance to 1e-6 of the coefficients' scale in w and b, and its
held-out accuracies with those of ``LinearSVC`` at its default tolerance to within a few test
points (tested).
``solver="liblinear"`` fits ``LinearSVC(C=0.01, class_weight="balanced", dual=False)`` itself,
on ``torch.get_num_threads()`` threads (disentanglement_lib uses the dual solver of the same
problem). On 10,000 codes the exact solver is about 5 times faster, which keeps SAP's own work
within 20% of the encoder's time (``benchmarks/bench_metrics.py``).

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

from .utils import (Representation, check_codes, check_factor_classes, check_varying_factors,
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


def sap(representation: Representation, dataset, num_train: int = 10_000,
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
                sorted_codes = _SortedCodes(z[order, j])
                for k, (classes, index, counts) in enumerate(labels):
                    w, b = sorted_codes.fit(index.reshape(-1)[order], counts, SVM_C)
                    S[j, k] = np.mean(_predict(z_test[:, j], classes, w, b) == v_test[:, k])
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


class _SortedCodes:
    """One code dimension sorted by value, with prefix sums of (1, z, z^2): the sums of any
    set of points whose codes lie below or above a threshold, overall or within a class, in a
    few binary searches."""

    def __init__(self, codes_sorted: np.ndarray):
        self.x = np.asarray(codes_sorted, dtype=np.float64)
        self.n = self.x.shape[0]
        self.prefix = self._prefix(self.x)                                # (n + 1, 3)

    @staticmethod
    def _prefix(x):
        out = np.zeros((x.shape[0] + 1, 3))
        out[1:, 0] = np.arange(1, x.shape[0] + 1)
        np.cumsum(x, out=out[1:, 1])
        np.cumsum(x * x, out=out[1:, 2])
        return out

    def fit(self, index, counts, C, max_iter: int = 100):
        """Minimise liblinear's objective (module docstring) for every one-vs-rest problem of
        the classes ``index`` (class of each sorted point, 0..m-1, with ``counts``); returns
        ``w, b`` of shape (m,), or (1,) for two classes (positive class: the second)."""
        n, m_all = self.n, counts.shape[0]
        weight = n / (m_all * counts)                                     # "balanced"
        if m_all == 2:
            cls, c_pos, c_neg = np.array([1]), C * weight[1:], C * weight[:1]
        else:
            cls, c_pos, c_neg = np.arange(m_all), C * weight, np.full(m_all, C)
        by_class = np.argsort(index, kind="stable")      # class-major, by value within a class
        keys = index[by_class] * (n + 1) + by_class
        class_prefix = self._prefix(self.x[by_class])
        start = np.concatenate([[0], np.cumsum(counts)])[cls]
        class_total = class_prefix[start + counts[cls]] - class_prefix[start]
        other_total = self.prefix[-1] - class_total

        def below(t):
            # sums of (1, z, z^2) over the points with z < t: all points, and class cls only
            g = np.searchsorted(self.x, t, side="left")
            k = np.searchsorted(keys, cls * (n + 1) + g, side="left")
            return self.prefix[g], class_prefix[k] - class_prefix[start]

        def evaluate(w, b):
            # Points inside the margin: class c with w z + b < 1, the others with w z + b > -1
            # (points on the margin add nothing, so ties at a threshold do not matter).
            with np.errstate(divide="ignore", invalid="ignore"):
                t_pos = np.where(w != 0, (1 - b) / w, np.where(b < 1, np.inf, -np.inf))
                t_neg = np.where(w != 0, (-1 - b) / w, np.where(b > -1, -np.inf, np.inf))
            up = (w >= 0)[:, None]
            _, pos_below = below(t_pos)
            all_below, cls_below = below(t_neg)
            pos = np.where(up, pos_below, class_total - pos_below)
            neg = np.where(up, other_total - (all_below - cls_below), all_below - cls_below)
            (p0, p1, p2), (n0, n1, n2) = pos.T, neg.T
            f = (0.5 * (w * w + b * b)
                 + c_pos * (p0 - 2 * (w * p1 + b * p0) + w * w * p2 + 2 * w * b * p1 + b * b * p0)
                 + c_neg * (n0 + 2 * (w * n1 + b * n0) + w * w * n2 + 2 * w * b * n1 + b * b * n0))
            gw = w - 2 * c_pos * (p1 - w * p2 - b * p1) + 2 * c_neg * (n1 + w * n2 + b * n1)
            gb = b - 2 * c_pos * (p0 - w * p1 - b * p0) + 2 * c_neg * (n0 + w * n1 + b * n0)
            hww = 1 + 2 * (c_pos * p2 + c_neg * n2)
            hwb = 2 * (c_pos * p1 + c_neg * n1)
            hbb = 1 + 2 * (c_pos * p0 + c_neg * n0)
            return f, gw, gb, hww, hwb, hbb

        w, b = np.zeros(cls.shape[0]), np.zeros(cls.shape[0])
        f, gw, gb, hww, hwb, hbb = evaluate(w, b)
        g0 = np.maximum(np.hypot(gw, gb), 1.0)
        for _ in range(max_iter):
            det = hww * hbb - hwb * hwb                        # >= 1: the Hessian is >= I
            dw, db = -(hbb * gw - hwb * gb) / det, -(hww * gb - hwb * gw) / det
            slope = gw * dw + gb * db
            step = np.ones_like(w)
            for _ in range(60):                                # backtracking (Armijo)
                new_w, new_b = w + step * dw, b + step * db
                ok = evaluate(new_w, new_b)[0] <= f + 1e-4 * step * slope
                if ok.all():
                    break
                step = np.where(ok, step, 0.5 * step)
            moved = ok & (step * np.hypot(dw, db) > 1e-15 * (1 + np.hypot(w, b)))
            w, b = np.where(moved, new_w, w), np.where(moved, new_b, b)
            f, gw, gb, hww, hwb, hbb = evaluate(w, b)
            if np.all((np.hypot(gw, gb) <= 1e-10 * g0) | ~moved):   # converged, or at float
                break                                               # precision
        return w, b


def _predict(codes, classes, w, b):
    """LinearSVC's prediction from one code dimension: the class of largest w_c z + b_c (one
    vs rest), or the second class where w z + b > 0 (two classes)."""
    decision = np.asarray(codes, dtype=np.float64)[:, None] * w[None, :] + b[None, :]
    if classes.shape[0] == 2:
        return classes[(decision[:, 0] > 0).astype(np.int64)]
    return classes[np.argmax(decision, axis=1)]
