"""The alignment measures: each checked on a case whose answer is known by construction."""

import numpy as np
import pytest
import torch

from bvae_lib.data import DSprites
from bvae_lib.metrics import (factor_alignment, matched_accuracy, mig_from_codes,
                              shape_in_reconstruction)


@pytest.fixture(scope="module")
def dsprites():
    return DSprites()


def test_a_latent_that_copies_a_factor_is_its_best_with_a_full_gap(dsprites):
    _, v = dsprites.sample(4000, torch.Generator().manual_seed(0))
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(4000, 4))
    codes[:, 2] = v[:, 3].numpy() + 0.01 * rng.normal(size=4000)      # z_2 = position x
    a = factor_alignment(codes, v.numpy(), dsprites.factor_names)
    x = dsprites.factor_names.index("position_x")
    assert a.best[x] == 2
    # 32 classes in 20 bins: I = H(binned) ~ log 20 -> NMI ~ log 20 / log 32 = 0.86
    assert 0.8 < a.best_nmi[x] <= 1 and a.gap[x] > 0.75
    # the gaps averaged over the factors are MIG's
    assert np.isclose(a.gap.mean(), mig_from_codes(codes, v.numpy()).score)
    assert "position_x   z_2" in a.table()


def test_matched_accuracy_finds_a_relabelled_partition_and_chance_for_noise():
    y = np.repeat(np.arange(3), 100)
    perm = np.array([2, 0, 1])
    assert matched_accuracy(perm[y], y).accuracy == 1.0
    assert matched_accuracy(perm[y], y).matching == {2: 0, 0: 1, 1: 2}
    c = np.zeros_like(y)                         # one category for every image
    assert matched_accuracy(c, y, num_categories=3).accuracy == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="integer"):
        matched_accuracy(y.astype(float), y)
    with pytest.raises(ValueError, match="equal length"):
        matched_accuracy(y[:5], y)


def test_shape_in_reconstruction_is_one_for_the_images_and_chance_for_a_blur(dsprites):
    x, v = dsprites.sample(300, torch.Generator().manual_seed(1))
    assert shape_in_reconstruction(x, v, dsprites) == 1.0
    blur = torch.full_like(x, float(x.mean()))
    assert shape_in_reconstruction(blur, v, dsprites) < 0.5     # all ties: argmin picks class 0
    with pytest.raises(ValueError, match="probabilities"):
        shape_in_reconstruction(x * 3 - 1, v, dsprites)


def test_one_metric_registry_serves_the_cli_and_the_zoo():
    from bvae_lib import zoo
    from bvae_lib.metrics.registry import REGISTRY, to_json

    assert set(zoo.METRIC_SETTINGS) == {n for n, m in REGISTRY.items() if m.zoo is not None}
    for name, metric in REGISTRY.items():
        if metric.zoo is not None:
            assert zoo.METRIC_SETTINGS[name] == metric.zoo
            assert set(metric.fast) <= set(metric.zoo) | {"num_variance_estimate", "num_points"}
    assert {"dci", "sap"} <= set(REGISTRY)           # the command line scores them too
    assert to_json({"a": np.float32(0.5), "b": np.arange(2), "c": (1, "x")}) == \
        {"a": 0.5, "b": [0, 1], "c": [1, "x"]}
