"""The probability toolkit: Gaussian, Gumbel and Concrete densities, samplers and KLs.

Every function here is one line of mathematics; the book derives each one and then checks its
own from-scratch version against these. Shapes follow torch broadcasting and nothing is summed
unless the name says so (``gaussian_kl`` is *per dimension*: sum it over latents yourself).

========================================  ===========================================================
``gaussian_log_density(z, mu, logvar)``   log N(z; mu, exp(logvar)), elementwise
``gaussian_kl(mu, logvar)``               KL(N(mu, exp(logvar)) || N(0, 1)), elementwise
``reparameterize(mu, logvar)``            z = mu + exp(logvar / 2) * eps, eps ~ N(0, I)
``sample_gumbel(shape)``                  Gumbel(0, 1) by inverse CDF, g = -log(-log u)
``gumbel_max_sample(logits)``             argmax(logits + g): an exact categorical sample
``gumbel_softmax_sample(logits, tau)``    softmax((logits + g) / tau): a Concrete sample
``concrete_log_density(y, logits, tau)``  log density of the Concrete (Maddison et al. 2017)
``categorical_kl_uniform(probs)``         KL(Cat(probs) || Uniform(k)), one value per categorical
``categorical_kl_split(probs)``           a batch's mean KL = information I(n; c) + marginal KL
========================================  ===========================================================

Random functions take an optional ``torch.Generator``: with one, the draw is reproducible. The
noise is drawn on the generator's device and moved to the data's device, so a CPU generator also
works for CUDA tensors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "LOG_2PI",
    "gaussian_log_density",
    "gaussian_kl",
    "reparameterize",
    "sample_gumbel",
    "gumbel_max_sample",
    "gumbel_softmax_sample",
    "concrete_log_density",
    "categorical_kl_uniform",
    "categorical_kl_split",
]

LOG_2PI = math.log(2 * math.pi)


def _noise(kind: str, shape, like: torch.Tensor | None, generator, device=None, dtype=None):
    """Standard normal or uniform noise of ``shape``, on ``like``'s device and dtype.

    Drawn on the generator's device (torch refuses a CPU generator for CUDA draws) and moved.
    """
    device = like.device if like is not None else (device or torch.device("cpu"))
    dtype = like.dtype if like is not None else (dtype or torch.get_default_dtype())
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    draw_device = generator.device if generator is not None else device
    fn = torch.randn if kind == "normal" else torch.rand
    return fn(tuple(shape), generator=generator, device=draw_device, dtype=dtype).to(device)


def _check_tau(tau) -> float:
    # "not (tau > 0)" also catches NaN, whose comparisons are all false; infinity would make
    # every sample uniform whatever the logits
    if isinstance(tau, torch.Tensor):
        bad = bool((~(tau > 0) | ~torch.isfinite(tau)).any())
    else:
        bad = not (float(tau) > 0 and math.isfinite(float(tau)))
    if bad:
        raise ValueError(f"tau (the Concrete / Gumbel-softmax temperature) must be finite and "
                         f"> 0, got "
                         f"{tau!r}; Dupont 2018 uses 0.67, and tau -> 0 approaches one-hot samples")
    return tau


# ---------------------------------------------------------------------------------------------
# Diagonal Gaussians
# ---------------------------------------------------------------------------------------------

def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, sigma^2) with sigma^2 = exp(logvar), elementwise (no sum over dimensions).

    -1/2 [log(2 pi) + logvar + (z - mu)^2 / sigma^2]. Multiplying by exp(-logvar) rather than
    dividing by exp(logvar) keeps it finite for very negative log-variances.
    """
    return -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar))


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) per dimension, in closed form (Kingma & Welling 2014, App. B).

    KL = 1/2 (mu^2 + sigma^2 - 1 - log sigma^2). Same shape as ``mu``; sum over the last axis for
    the KL of a diagonal Gaussian to N(0, I), since the KL of independent factors adds up.
    """
    return 0.5 * (mu ** 2 + torch.exp(logvar) - 1.0 - logvar)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """A sample z ~ N(mu, exp(logvar)) written as z = mu + sigma * eps with eps ~ N(0, I).

    The randomness sits in eps, which does not depend on (mu, logvar), so gradients flow through
    mu and sigma (the reparameterisation trick, Kingma & Welling 2014; Rezende et al. 2014).
    """
    if mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must have the same shape, got {tuple(mu.shape)} and "
                         f"{tuple(logvar.shape)}")
    eps = _noise("normal", mu.shape, mu, generator)
    return mu + torch.exp(0.5 * logvar) * eps


# ---------------------------------------------------------------------------------------------
# Gumbel, Gumbel-max and the Concrete (Gumbel-softmax) distribution
# ---------------------------------------------------------------------------------------------

def sample_gumbel(shape, generator: torch.Generator | None = None, eps: float = 1e-20,
                  device=None, dtype=None) -> torch.Tensor:
    """Gumbel(0, 1) samples by inverse CDF: F(g) = exp(-exp(-g)), so g = -log(-log u), u ~ U(0, 1).

    ``torch.rand`` can return exactly 0, where -log(-log 0) = -inf; we clamp u to ``eps`` first
    (u < 1 always, so the other end is safe). With eps = 1e-20 the clamp changes the
    distribution only below probability 1e-20.
    """
    u = _noise("uniform", shape, None, generator, device=device, dtype=dtype)
    return -torch.log(-torch.log(u.clamp_min(eps)))


def gumbel_max_sample(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Exact categorical samples: argmax_i (logits_i + g_i) ~ Cat(softmax(logits)) (Gumbel 1954).

    Returns long indices of shape ``logits.shape[:-1]``; ``logits`` may be unnormalised.
    """
    g = sample_gumbel(logits.shape, generator, device=logits.device, dtype=logits.dtype)
    return torch.argmax(logits + g, dim=-1)


def gumbel_softmax_sample(logits: torch.Tensor, tau: float, hard: bool = False,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """A relaxed one-hot sample y = softmax((logits + g) / tau) from the Concrete distribution
    (Maddison et al. 2017; Jang et al. 2017 call it Gumbel-softmax).

    As tau -> 0 the sample tends to the one-hot vector of :func:`gumbel_max_sample` (same noise,
    same argmax); as tau grows it tends to the uniform vector. With ``hard=True`` the forward
    value is that one-hot vector and the gradient is the relaxed sample's (straight-through).
    """
    _check_tau(tau)
    g = sample_gumbel(logits.shape, generator, device=logits.device, dtype=logits.dtype)
    y = torch.softmax((logits + g) / tau, dim=-1)
    if not hard:
        return y
    one_hot = F.one_hot(y.argmax(dim=-1), y.shape[-1]).to(y.dtype)
    return one_hot - y.detach() + y


def concrete_log_density(y: torch.Tensor, logits: torch.Tensor, tau: float) -> torch.Tensor:
    """log p(y) of the Concrete distribution with location exp(logits) and temperature tau.

    Maddison et al. 2017 (the density of the Concrete distribution): for y on the simplex with k categories and alpha = exp(logits),

        p(y) = (k - 1)! tau^(k-1) prod_i [ alpha_i y_i^(-tau-1) / sum_j alpha_j y_j^(-tau) ].

    It is a density with respect to Lebesgue measure on the first k - 1 coordinates (the last is
    1 minus their sum), so it integrates to 1 over the simplex. Returns shape ``y.shape[:-1]``.
    Adding a constant to the logits leaves it unchanged (k copies of the constant cancel).
    """
    _check_tau(tau)
    k = y.shape[-1]
    log_y = torch.log(y)
    log_norm = torch.logsumexp(logits - tau * log_y, dim=-1)
    return (math.lgamma(k) + (k - 1) * math.log(tau)
            + (logits - (tau + 1) * log_y).sum(dim=-1) - k * log_norm)


def categorical_kl_uniform(probs: torch.Tensor) -> torch.Tensor:
    """KL(Cat(probs) || Uniform(k)) = sum_i p_i log p_i + log k, one value per categorical.

    Shape ``probs.shape[:-1]``. It is log k minus the entropy, so it lies in [0, log k]: 0 for the
    uniform vector, log k for a one-hot one (0 log 0 = 0, via ``xlogy``). JointVAE caps the
    discrete capacity at the sum of these log k (Dupont 2018).
    """
    k = probs.shape[-1]
    return torch.special.xlogy(probs, probs).sum(dim=-1) + math.log(k)


def categorical_kl_split(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the mean KL of ``probs`` (shape ``(n, k)``: one categorical per image) to the uniform
    prior into ``(information, marginal confidence)``:

    E_n KL(q(c|x_n) || U_k) = E_n KL(q(c|x_n) || q_bar) + KL(q_bar || U_k),

    with q_bar the mean of the rows. The first part is I(n; c), what the category says about the
    image; the second a category that is the same for every image fills on its own (chapter 7,
    section 7.6). Over a minibatch q_bar is the batch's mean, a plug-in estimate.
    """
    marginal = categorical_kl_uniform(probs.mean(0))
    return categorical_kl_uniform(probs).mean() - marginal, marginal
