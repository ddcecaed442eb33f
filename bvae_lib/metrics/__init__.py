"""Disentanglement metrics: each scores a *representation* on a ground-truth dataset.

A representation is any callable images ``(n, 1, 64, 64)`` -> codes ``(n, d)`` (torch or
numpy): ``model.representation``, a PCA, the identity on :class:`bvae_lib.baselines.
IdentityObservations`. Metrics never import a model. One module a metric, as in
disentanglement_lib:

==============  ===================================================  ===========================
module          functions                                            paper
==============  ===================================================  ===========================
``beta_vae``    :func:`beta_vae_score`                               Higgins et al. 2017
``mig``         :func:`mig`, :func:`mig_from_codes`,                 Chen et al. 2018 (histogram
                :func:`mig_from_posterior`                           and sampling)
``factor_vae``  :func:`factor_vae_score`                             Kim & Mnih 2018
``dci``         :func:`dci`, :func:`dci_from_codes`                  Eastwood & Williams 2018
``sap``         :func:`sap`, :func:`sap_from_codes`                  Kumar et al. 2018
``alignment``   :func:`factor_alignment`, :func:`matched_accuracy`,  what a traversal is read
                :func:`shape_in_reconstruction`                      with (per factor: best
                                                                     latent, NMI, gap)
==============  ===================================================  ===========================

Every function takes a ``seed``: the same seed gives the same score.
"""

from .alignment import (Alignment, MatchedAccuracy, factor_alignment, matched_accuracy,
                        shape_in_reconstruction)
from .beta_vae import HIGGINS_FACTORS, BetaVAEScore, beta_vae_score
from .dci import DCIResult, dci, dci_from_codes
from .factor_vae import FactorVAEScore, factor_vae_score
from .mig import MIGResult, mig, mig_from_codes, mig_from_posterior
from .sap import SAPResult, sap, sap_from_codes
from .swap import SwapAccuracy, swap_accuracy

__all__ = [
    "beta_vae_score", "BetaVAEScore", "HIGGINS_FACTORS",
    "mig", "mig_from_codes", "mig_from_posterior", "MIGResult",
    "factor_vae_score", "FactorVAEScore",
    "dci", "dci_from_codes", "DCIResult",
    "sap", "sap_from_codes", "SAPResult",
    "factor_alignment", "Alignment", "matched_accuracy", "MatchedAccuracy",
    "shape_in_reconstruction", "swap_accuracy", "SwapAccuracy",
]
