"""The metrics the command line and the zoo score a model with, in one table.

Each entry names the scoring function and two sets of sample sizes besides the function's own
defaults (which are the papers'): ``fast``, about 50x smaller, for a quick look on a CPU
(``python -m bvae_lib evaluate --fast``); and ``zoo``, the sizes recorded in every shipped
model's manifest (``bvae_lib.zoo``), small enough that ``zoo verify`` recomputes them in about a
minute. The benchmarks (``benchmarks/bench_metrics.py``) time the functions of this table.
:func:`to_json` turns any metric result into JSON values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from ._beta_vae import beta_vae_score
from ._dci import dci
from ._factor_vae import factor_vae_score
from ._mig import mig
from ._sap import sap

__all__ = ["Metric", "REGISTRY", "to_json"]


@dataclass(frozen=True)
class Metric:
    name: str
    function: Callable        # (representation, dataset, seed=..., **sizes) -> a result
    fast: dict                # `evaluate --fast`
    zoo: dict | None          # the zoo's manifests (None: not recorded there)


#: The papers' sizes are the functions' defaults (beta-VAE metric 10,000 + 5,000 points of
#: L = 64 pairs; FactorVAE 10,000 + 5,000 votes; MIG 10,000 images, 20 bins). The beta-VAE
#: metric at the papers' sizes encodes 1.9 million images, an hour on a 2-core CPU.
REGISTRY = {m.name: m for m in (
    Metric("beta_vae", beta_vae_score,
           fast=dict(num_train=200, num_eval=100),
           zoo=dict(num_train=300, num_eval=150)),
    Metric("mig", mig,
           fast=dict(num_points=2_000),
           zoo=dict(num_points=10_000, num_bins=20)),
    Metric("factor_vae", factor_vae_score,
           fast=dict(num_train=200, num_eval=100, num_variance_estimate=2_000),
           zoo=dict(num_train=300, num_eval=150, num_variance_estimate=5_000)),
    # DCI and SAP are scored from the command line; the manifests do not record them (zoo=None)
    Metric("dci", dci, fast=dict(num_train=1_000, num_test=500), zoo=None),
    Metric("sap", sap, fast=dict(num_train=1_000, num_test=500), zoo=None),
)}


def to_json(value):
    """Metric results (dataclasses, floats, numpy/torch arrays and scalars, dicts) -> JSON."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)
