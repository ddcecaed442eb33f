"""DCI and SAP on representations whose answer is known."""

import numpy as np
import pytest
import torch

from bvae_lib.baselines import IdentityObservations, identity
from bvae_lib.metrics import dci, dci_from_codes, sap, sap_from_codes
from bvae_lib.metrics._dci import _completeness, _disentanglement

GRID = IdentityObservations((3, 4, 5, 6))      # few classes: the tree ensembles stay fast
SMALL = dict(num_train=1000, num_test=500)


def mixed(seed=0):
    A = torch.randn(4, 4, generator=torch.Generator().manual_seed(seed))
    return lambda v: v @ A


def noise(seed=0, d=4):
    g = torch.Generator().manual_seed(seed)
    return lambda v: torch.randn(v.shape[0], d, generator=g)


# -- DCI ---------------------------------------------------------------------------------------

def test_dci_formulas_on_hand_made_importance_matrices():
    assert _disentanglement(np.eye(4))[0] == pytest.approx(1.0)
    assert _completeness(np.eye(4))[0] == pytest.approx(1.0)
    assert _disentanglement(np.ones((4, 4)))[0] == pytest.approx(0.0, abs=1e-9)
    assert _completeness(np.ones((4, 4)))[0] == pytest.approx(0.0, abs=1e-9)
    # One dimension used by both of two factors: D of that row is 0, C of both factors is 1.
    R = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert _disentanglement(R)[0] == pytest.approx(0.0, abs=1e-9)
    assert _completeness(R)[0] == pytest.approx(1.0)


@pytest.mark.parametrize("model", ["random_forest", "gbt"])
def test_dci_true_factors_are_disentangled_complete_and_informative(model):
    result = dci(identity, GRID, model=model, **SMALL)
    assert result.disentanglement > 0.95 and result.completeness > 0.95
    assert result.informativeness_test > 0.99
    assert np.array_equal(np.argmax(result.importance, axis=0), np.arange(4))


def test_dci_mixed_codes_are_informative_but_entangled():
    result = dci(mixed(), GRID, **SMALL)
    assert result.disentanglement < 0.5 and result.completeness < 0.5
    assert result.informativeness_test > 0.6


def test_dci_independent_codes_are_uninformative():
    result = dci(noise(), GRID, **SMALL)
    assert result.informativeness_test < 0.4 and result.disentanglement < 0.3


def test_dci_invariant_to_permuting_and_rescaling_dimensions():
    perm = [2, 0, 3, 1]
    base = dci(mixed(), GRID, **SMALL)
    moved = dci(lambda v: mixed()(v)[:, perm] * torch.tensor([1e-3, 5.0, -1e3, 0.5]), GRID,
                **SMALL)
    assert abs(moved.disentanglement - base.disentanglement) < 0.05
    assert abs(moved.completeness - base.completeness) < 0.05
    np.testing.assert_allclose(moved.importance, base.importance[perm], atol=0.05)


def test_dci_same_seed_same_score():
    a, b = dci(mixed(), GRID, seed=3, **SMALL), dci(mixed(), GRID, seed=3, **SMALL)
    assert a.disentanglement == b.disentanglement and np.array_equal(a.importance, b.importance)
    assert dci(mixed(), GRID, seed=4, **SMALL).disentanglement != a.disentanglement


# -- SAP ---------------------------------------------------------------------------------------

def test_sap_continuous_true_factors_score_one_and_noise_zero():
    perfect = sap(identity, GRID, continuous_factors=True, **SMALL)
    assert perfect.score > 0.98
    assert sap(noise(d=6), GRID, continuous_factors=True, **SMALL).score < 0.02


def test_sap_discrete_true_factors_beat_noise_by_far():
    perfect = sap(identity, GRID, **SMALL)
    assert np.all(perfect.gaps > 0.2) and np.array_equal(
        np.argmax(perfect.score_matrix, axis=0), np.arange(4))
    assert sap(noise(), GRID, **SMALL).score < 0.05


def test_sap_factor_copied_into_two_latents_has_gap_zero():
    copy = lambda v: torch.cat([v, 3 * v[:, :1] - 1], dim=1)
    result = sap(copy, GRID, continuous_factors=True, **SMALL)
    assert result.gaps[0] < 1e-9 and np.all(result.gaps[1:] > 0.98)


def test_sap_continuous_invariant_to_permuting_and_rescaling_dimensions():
    v = GRID.sample_factors(2000, torch.Generator().manual_seed(0)).numpy()
    z = v + np.random.default_rng(0).normal(size=v.shape)
    base = sap_from_codes(z, v, continuous_factors=True)
    perm = [3, 1, 0, 2]
    moved = sap_from_codes(z[:, perm] * np.array([-1e3, 2.0, 1e-4, 7.0]), v,
                           continuous_factors=True)
    np.testing.assert_allclose(moved.gaps, base.gaps, rtol=1e-9)
    assert 0.1 < base.score < 0.9


def _liblinear_tight(x, y):
    import warnings
    from sklearn.svm import LinearSVC
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # tight tolerances may report slow convergence
        clf = LinearSVC(C=0.01, class_weight="balanced", dual=False, tol=1e-12,
                        max_iter=100_000).fit(x[:, None], y)
    return clf


SVM_CASES = {
    "two classes": (lambda r: r.normal(size=600), lambda r, x: (x + r.normal(size=600) > 0.3)),
    "three classes, scaled up": (lambda r: 1e3 * r.normal(size=500),
                                 lambda r, x: np.digitize(x, [-300, 400])),
    "forty classes, decreasing": (lambda r: r.normal(size=2000),
                                  lambda r, x: np.clip(((-x + 3) * 7).astype(int), 0, 39)),
    "integer codes with ties": (lambda r: r.integers(0, 6, size=400).astype(float),
                                lambda r, x: ((x + r.integers(0, 2, size=400)) // 2)),
    "noise, unbalanced": (lambda r: 1e-3 * r.normal(size=800),
                          lambda r, x: r.choice([0, 1, 5, 9], size=800, p=[0.7, 0.1, 0.1, 0.1])),
}


@pytest.mark.parametrize("case", sorted(SVM_CASES))
def test_sap_exact_svm_is_liblinears_optimum(case):
    # The exact one-feature solver minimises the objective LinearSVC(C=0.01, balanced) solves:
    # same w and b as liblinear run to a tight tolerance, hence the same predictions.
    from bvae_lib.metrics._sap_solver import SortedCodes, predict
    from bvae_lib.metrics._sap import SVM_C
    rng = np.random.default_rng(0)
    make_x, make_y = SVM_CASES[case]
    x = make_x(rng)
    y = np.asarray(make_y(rng, x), dtype=np.int64)
    classes, index, counts = np.unique(y, return_inverse=True, return_counts=True)
    order = np.argsort(x, kind="stable")
    w, b = SortedCodes(x[order]).fit(index[order], counts, SVM_C)
    clf = _liblinear_tight(x, y)
    scale = 1 + np.abs(clf.coef_[:, 0]).max() + np.abs(clf.intercept_).max()
    np.testing.assert_allclose(w, clf.coef_[:, 0], atol=1e-6 * scale)
    np.testing.assert_allclose(b, clf.intercept_, atol=1e-6 * scale)
    x_test = make_x(np.random.default_rng(1))
    agree = np.mean(predict(x_test, classes, w, b) == clf.predict(x_test[:, None]))
    assert agree >= 1 - 2 / len(x_test)          # at most a point on a decision boundary


def test_sap_solvers_agree():
    v = GRID.sample_factors(1500, torch.Generator().manual_seed(2)).numpy()
    z = mixed(3)(torch.as_tensor(v, dtype=torch.float32)).numpy()
    z = z + np.random.default_rng(3).normal(size=z.shape)
    parts = (z[:1000], v[:1000], z[1000:], v[1000:])
    exact, lib = sap_from_codes(*parts), sap_from_codes(*parts, solver="liblinear")
    # liblinear stops at its default tolerance: a test point near a boundary may flip
    np.testing.assert_allclose(exact.score_matrix, lib.score_matrix, atol=2 / 500)
    assert exact.score == pytest.approx(lib.score, abs=2 / 500)


def test_sap_same_seed_same_score():
    a, b = sap(mixed(), GRID, seed=1, **SMALL), sap(mixed(), GRID, seed=1, **SMALL)
    assert np.array_equal(a.score_matrix, b.score_matrix)


# -- bad input ---------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    v = GRID.sample_factors(50, torch.Generator().manual_seed(0)).numpy()
    z = np.random.default_rng(0).normal(size=(50, 4))
    with pytest.raises(ValueError, match="same length"):
        dci_from_codes(z[:40], v, z, v)
    with pytest.raises(ValueError, match="NaN"):
        sap_from_codes(np.where(z > 1, np.nan, z), v, z, v)
    with pytest.raises(ValueError, match="codes_test"):
        sap_from_codes(z, v)
    with pytest.raises(ValueError, match="model"):
        dci_from_codes(z, v, z, v, model="xgboost")
    with pytest.raises(ValueError, match="does not exist"):
        dci(identity, GRID, factors=["shape"], **SMALL)
    with pytest.raises(ValueError, match="does not exist"):
        sap(identity, GRID, factors=["v9"], **SMALL)
    with pytest.raises(ValueError, match="solver"):
        sap_from_codes(z, v, z, v, solver="dual")
    constant = v.copy()
    constant[:, 1] = 2
    for solver in ("exact", "liblinear"):
        with pytest.raises(ValueError, match="factor column 1 is constant"):
            sap_from_codes(z, constant, z, v, solver=solver)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_dci_and_sap_do_not_depend_on_the_thread_count(two_threads):
    # Both parallelise their classifiers over torch.get_num_threads() threads.
    v = GRID.sample_factors(1500, torch.Generator().manual_seed(0)).numpy()
    z = mixed()(torch.as_tensor(v, dtype=torch.float32)).numpy()
    parts = (z[:1000], v[:1000], z[1000:], v[1000:])
    dci_two, sap_two = dci_from_codes(*parts), sap_from_codes(*parts)
    torch.set_num_threads(1)
    dci_one, sap_one = dci_from_codes(*parts), sap_from_codes(*parts)
    np.testing.assert_array_equal(dci_two.importance, dci_one.importance)
    np.testing.assert_array_equal(sap_two.score_matrix, sap_one.score_matrix)
