"""DCI: Disentanglement, Completeness, Informativeness (Eastwood & Williams 2018).

Fit one predictor per factor v_k from the whole code z, and read off how much each code
dimension z_j matters to it: the importance matrix R (d, K), R_jk >= 0.

* Disentanglement of dimension j: 1 - H_K(P_j.), with P_jk = R_jk / sum_k R_jk and the entropy
  in base K: 1 when z_j matters to one factor only. Averaged with weights sum_k R_jk / sum R.
* Completeness of factor k: 1 - H_d(P~_.k), P~_jk = R_jk / sum_j R_jk, entropy in base d: 1 when
  one dimension alone predicts v_k. Averaged with weights sum_j R_jk / sum R.
* Informativeness: how well the predictors do; here classification accuracy, on the training
  points and on held-out points (disentanglement_lib reports both).

Defaults (disentanglement_lib's dci.gin): ``num_train=10_000``, ``num_test=5_000`` images; cost
15,000 images encoded.

The predictor, and why our default differs from disentanglement_lib's: disentanglement_lib uses
``sklearn.ensemble.GradientBoostingClassifier()`` (100 stages of depth-3 trees, *one tree per
class per stage*), with impurity-based ``feature_importances_``. On dSprites that is 100 x
(3 + 6 + 40 + 32 + 32) = 11,300 trees: about 10 minutes on a 2-core CPU, 15 times the encoder's
time. Eastwood & Williams's own paper uses a random forest (and lasso). Our default
``model="random_forest"`` is ``RandomForestClassifier(n_estimators=10, max_features=None,
min_samples_leaf=20)`` with the same impurity-based importances, about 100 times faster here;
``model="gbt"`` reproduces disentanglement_lib exactly (use it to compare with published
numbers). The two give similar D and C on clear cases (the tests check both) but not identical
numbers. The trees are grown on ``torch.get_num_threads()`` threads (the same trees whatever the
number: sklearn draws each tree's seed up front).

Why those forest settings: impurity importances credit whatever feature a split uses. A forest
that may only look at sqrt(d) features per split (sklearn's default) is often *forced* to split
on irrelevant dimensions, and fully grown trees keep splitting on noise; both spread importance
over dimensions that carry nothing (the true factors then score D ~ 0.5). Like the boosted trees,
we let every split see all dimensions, and we stop leaves at 20 points (true factors: D = 1).
Trees that see every dimension differ only by their bootstrap sample, so few are needed: on a
partly entangled 10-d test case, 10 trees give D within 0.003 of 50 trees (seed-to-seed spread
0.006, against 0.002 for 50 trees) in a third of the time.

Cost beyond encoding: growing the 10-tree forests takes about 0.6 of the time of encoding the
15,000 images on the book's 2-core CPU; what cheaper predictors would do to the scores is
measured by ``benchmarks/bench_dci.py`` (figures in ``benchmarks/README.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.stats
import torch
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

from .utils import (RepresentationFn, check_codes, check_factor_classes,
                    check_varying_factors, train_test_codes)

MODELS = ("random_forest", "gbt")
FOREST_TREES = 10          # trees of the default random forest (see the module docstring)


@dataclass(frozen=True)
class DCIResult:
    """Result of :func:`dci`. ``score`` is the disentanglement D (disentanglement_lib's
    headline number); completeness and informativeness are reported beside it."""
    score: float
    disentanglement: float
    completeness: float
    informativeness_train: float     # mean accuracy over factors, training points
    informativeness_test: float      # mean accuracy over factors, held-out points
    importance: np.ndarray           # (d, K) R_jk
    disentanglement_per_code: np.ndarray   # (d,)
    completeness_per_factor: np.ndarray    # (K,)
    factors: tuple[str, ...]


def dci(representation: RepresentationFn, dataset, num_train: int = 10_000,
        num_test: int = 5_000, factors: "Sequence[str | int] | None" = None,
        model: str = "random_forest", seed: int = 0, batch_size: int = 256) -> DCIResult:
    """DCI of ``representation`` on ``dataset``: encodes ``num_train + num_test`` random images
    (15,000 at the defaults) and fits one classifier per factor (see the module docstring)."""
    names, z_train, v_train, z_test, v_test, clf_seed = train_test_codes(
        representation, dataset, factors, num_train, num_test, seed, batch_size)
    result = dci_from_codes(z_train, v_train, z_test, v_test, model=model, seed=clf_seed)
    return DCIResult(**{**result.__dict__, "factors": names})


def dci_from_codes(codes_train, factors_train, codes_test, factors_test,
                   model: str = "random_forest", seed: int = 0) -> DCIResult:
    """DCI from arrays: codes (n, d) and integer factor classes (n, K), train and test."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    z_train = check_codes(codes_train, "codes_train")
    z_test = check_codes(codes_test, "codes_test")
    v_train = check_factor_classes(factors_train, z_train.shape[0], "factors_train")
    v_test = check_factor_classes(factors_test, z_test.shape[0], "factors_test")
    if z_train.shape[1] != z_test.shape[1] or v_train.shape[1] != v_test.shape[1]:
        raise ValueError(f"train and test must have the same code and factor dimensions, got "
                         f"codes {z_train.shape[1]} vs {z_test.shape[1]}, factors "
                         f"{v_train.shape[1]} vs {v_test.shape[1]}")
    if model == "gbt":
        def make():
            return GradientBoostingClassifier(random_state=seed)
    else:
        def make():
            return RandomForestClassifier(n_estimators=FOREST_TREES, max_features=None,
                                          min_samples_leaf=20, random_state=seed,
                                          n_jobs=min(FOREST_TREES, torch.get_num_threads()))
    importance, acc_train, acc_test = fit_predictors(make, z_train, v_train, z_test, v_test)
    D, per_code = _disentanglement(importance)
    C, per_factor = _completeness(importance)
    return DCIResult(score=D, disentanglement=D, completeness=C,
                     informativeness_train=float(acc_train.mean()),
                     informativeness_test=float(acc_test.mean()), importance=importance,
                     disentanglement_per_code=per_code, completeness_per_factor=per_factor,
                     factors=tuple(f"factor {k}" for k in range(importance.shape[1])))


def fit_predictors(make, z_train, v_train, z_test, v_test):
    """Fit ``make()`` (a fresh scikit-learn classifier with ``feature_importances_``) to each
    factor column; returns the importance matrix R (d, K) and the train and test accuracies (K,).
    Checked arrays in, as :func:`dci_from_codes` passes them."""
    d, K = z_train.shape[1], v_train.shape[1]
    importance = np.zeros((d, K))
    acc_train, acc_test = np.zeros(K), np.zeros(K)
    check_varying_factors(v_train)
    for k in range(K):
        clf = make().fit(z_train, v_train[:, k])
        importance[:, k] = np.abs(clf.feature_importances_)
        acc_train[k] = np.mean(clf.predict(z_train) == v_train[:, k])
        acc_test[k] = np.mean(clf.predict(z_test) == v_test[:, k])
    return importance, acc_train, acc_test


def _disentanglement(R: np.ndarray) -> tuple[float, np.ndarray]:
    # 1 - entropy (base K) of each row; 1e-11 avoids log 0, as in disentanglement_lib.
    # With one factor there is nothing to disentangle from: every dimension scores 1.
    K = R.shape[1]
    per_code = (np.ones(R.shape[0]) if K == 1
                else 1.0 - scipy.stats.entropy(R.T + 1e-11, base=K))
    weights = R.sum(axis=1) / R.sum() if R.sum() > 0 else np.full(R.shape[0], 1 / R.shape[0])
    return float(np.sum(per_code * weights)), per_code


def _completeness(R: np.ndarray) -> tuple[float, np.ndarray]:
    d = R.shape[0]
    per_factor = (np.ones(R.shape[1]) if d == 1
                  else 1.0 - scipy.stats.entropy(R + 1e-11, base=d))
    weights = R.sum(axis=0) / R.sum() if R.sum() > 0 else np.full(R.shape[1], 1 / R.shape[1])
    return float(np.sum(per_factor * weights)), per_factor
