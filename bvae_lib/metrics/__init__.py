"""Disentanglement metrics: each scores a *representation* on a ground-truth dataset.

A representation is any callable images ``(n, 1, 64, 64)`` -> codes ``(n, d)`` (torch or
numpy): ``model.representation``, a PCA, the identity on :class:`bvae_lib.baselines.
IdentityObservations`. Metrics never import a model. One module a metric, as in
disentanglement_lib; the modules are private (``_mig.py`` defines :func:`mig`), so that
``bvae_lib.metrics.mig`` is the function and never a module it would hide, as in scikit-learn:

* ``_beta_vae``: :func:`beta_vae_score` -> :class:`BetaVAEResult` (Higgins et al. 2017);
* ``_mig``: :func:`mig`, :func:`mig_from_codes`, :func:`mig_from_posterior` ->
  :class:`MIGResult` (Chen et al. 2018, histogram and sampling estimators);
* ``_factor_vae``: :func:`factor_vae_score` -> :class:`FactorVAEResult` (Kim & Mnih 2018);
* ``_dci``: :func:`dci`, :func:`dci_from_codes` -> :class:`DCIResult` (Eastwood & Williams 2018);
* ``_sap``: :func:`sap`, :func:`sap_from_codes` -> :class:`SAPResult` (Kumar et al. 2018);
* ``_swap``: :func:`swap_accuracy` -> :class:`SwapResult` (Feng et al. 2018);
* ``_alignment``: :func:`factor_alignment`, :func:`matched_accuracy`,
  :func:`shape_in_reconstruction`: what a traversal is read with (per factor: best latent, NMI,
  gap).

``registry`` names the metrics the command line and the zoo compute, with their reduced sizes;
``utils`` holds what they share (encoding in batches, argument checks).

Every function takes a ``seed``: the same seed gives the same score.
"""

from ._alignment import (Alignment, MatchedAccuracy, factor_alignment, matched_accuracy,
                         shape_in_reconstruction)
from ._beta_vae import HIGGINS_FACTORS, BetaVAEResult, beta_vae_score
from ._dci import DCIResult, dci, dci_from_codes
from ._factor_vae import FactorVAEResult, factor_vae_score
from ._mig import MIGResult, mig, mig_from_codes, mig_from_posterior
from ._sap import SAPResult, sap, sap_from_codes
from ._swap import SwapResult, swap_accuracy

__all__ = [
    "beta_vae_score", "BetaVAEResult", "HIGGINS_FACTORS",
    "mig", "mig_from_codes", "mig_from_posterior", "MIGResult",
    "factor_vae_score", "FactorVAEResult",
    "dci", "dci_from_codes", "DCIResult",
    "sap", "sap_from_codes", "SAPResult",
    "factor_alignment", "Alignment", "matched_accuracy", "MatchedAccuracy",
    "shape_in_reconstruction", "swap_accuracy", "SwapResult",
]
