"""What DCI's predictor costs and what cheaper predictors would change.

    python benchmarks/bench_dci.py                 # the shipped models, about 5 minutes on 2 cores

DCI's own work is growing one classifier per factor on 10,000 codes (``bvae_lib/metrics/_dci.py``).
This script encodes 15,000 random dSprites images with each shipped model (three draws of
images) and scores them with the default forest and with cheaper or larger alternatives,
printing for each the time DCI's classifier work takes (fitting every factor, predicting the
training and held-out points) and its disentanglement D, completeness C and
held-out informativeness I, as differences from a 50-tree forest (the reference), averaged
over draws and classifier seeds. It is the evidence behind the default: the time column shows
what each alternative saves, the difference columns what it costs in bias.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

from bvae_lib import zoo
from bvae_lib.data import DSprites
from bvae_lib.metrics._dci import _completeness, _disentanglement, fit_predictors
from bvae_lib.metrics.utils import encode


def forest(trees, **kw):
    return lambda seed: RandomForestClassifier(trees, max_features=None, min_samples_leaf=20,
                                               random_state=seed,
                                               n_jobs=min(trees, torch.get_num_threads()), **kw)


VARIANTS = {
    "forest, 50 trees (reference)": forest(50),
    "forest, 10 trees (default)": forest(10),
    "forest, 3 trees": forest(3),
    "one tree, no bootstrap": lambda seed: DecisionTreeClassifier(min_samples_leaf=20,
                                                                  random_state=seed),
    "forest, 10 trees, half samples": forest(10, max_samples=0.5),
    "extra trees, 10": lambda seed: ExtraTreesClassifier(10, max_features=None,
                                                         min_samples_leaf=20, random_state=seed,
                                                         n_jobs=torch.get_num_threads()),
}


def score(make, z, v):
    # exactly DCI's own fitting loop (bvae_lib.metrics._dci.fit_predictors), with another predictor
    start = time.perf_counter()
    R, _, acc_test = fit_predictors(make, z[:10_000], v[:10_000], z[10_000:], v[10_000:])
    return (time.perf_counter() - start, _disentanglement(R)[0], _completeness(R)[0],
            acc_test.mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["beta1", "beta4", "beta_tcvae",
                                                        "annealed", "joint_vae"])
    parser.add_argument("--draws", type=int, default=2, help="independent sets of images")
    parser.add_argument("--seeds", type=int, default=2, help="classifier seeds per draw")
    args = parser.parse_args()
    dataset = DSprites()
    print(f"{torch.get_num_threads()} threads; 15,000 images a draw, {args.draws} draws x "
          f"{args.seeds} classifier seeds; differences from the 50-tree forest")
    header = f"{'model':>10s}  {'predictor':<32s} {'clf s':>6s} {'D':>6s} {'dD':>7s} {'dC':>7s} {'dI':>7s}"
    print(header)
    print("-" * len(header))
    for name in args.models:
        model = zoo.load(name)
        codes = []
        for draw in range(args.draws):
            x, v = dataset.sample(15_000, generator=torch.Generator().manual_seed(100 + draw))
            codes.append((np.asarray(encode(model.representation, x)), v.numpy()))
        results = {label: np.array([[score(lambda make=make, seed=seed: make(seed), z, v)
                                     for seed in range(args.seeds)]
                                    for z, v in codes]).mean(axis=(0, 1))
                   for label, make in VARIANTS.items()}
        ref = results["forest, 50 trees (reference)"]
        for label, (t, D, C, info) in results.items():
            print(f"{name:>10s}  {label:<32s} {t:6.2f} {D:6.3f} {D - ref[1]:+7.3f} "
                  f"{C - ref[2]:+7.3f} {info - ref[3]:+7.3f}", flush=True)


if __name__ == "__main__":
    main()
