"""Figures: what a trained VAE has learnt, and how training and sweeps went.

Every function returns a matplotlib :class:`~matplotlib.figure.Figure` (or, for the animation, an
:class:`IPython.display.HTML` object) and never calls ``plt.show()``: a notebook displays the
figure when a cell ends with it, a script saves it with ``fig.savefig``.

=================================  ===============================================================
:func:`plot_traversal`             one row per latent, ordered by KL, each labelled with its KL
:func:`plot_reconstructions`       data above, reconstructions below
:func:`plot_kl_per_latent`         the KL of each latent dimension (which ones carry information)
:func:`plot_training_curves`       every loss term of a ``bvae_lib.train`` history
:func:`plot_kl_history`            the KL of each latent over training, with the capacity C(t)
:func:`switch_on_steps`            when each latent's KL first rose above a threshold
:func:`plot_rate_distortion`       rate (KL) against distortion (reconstruction) across a sweep
:func:`plot_metric_vs_beta`        a disentanglement score against beta
:func:`animate_traversal`          a JavaScript animation for the static HTML book (deterministic)
:func:`interactive_traversal`      ipywidgets sliders for live notebooks and Colab
:func:`plot_swap_grid`             one image's code with each part swapped in from others (Dual-Swap)
=================================  ===============================================================

A *traversal* decodes codes that differ from one image's code in a single latent: latent j is
set to values on a grid (by default -2.5 ... 2.5, in units of the prior's standard deviation)
while the other latents stay at the image's posterior mean. A latent that encodes one factor
moves one thing in the image; a collapsed latent (KL ~ 0, the decoder ignores it) changes
nothing -- which is why rows are ordered by, and labelled with, their KL.
"""

from __future__ import annotations

import hashlib
import io
import re
from typing import Mapping, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

from bvae_lib.distributions import gaussian_kl

__all__ = [
    "decode_images",
    "latent_kl",
    "traversal_images",
    "plot_traversal",
    "plot_reconstructions",
    "plot_kl_per_latent",
    "plot_training_curves",
    "plot_kl_history",
    "switch_on_steps",
    "plot_rate_distortion",
    "plot_metric_vs_beta",
    "animate_traversal",
    "interactive_traversal",
    "plot_swap_grid",
]

#: Traversal range in prior standard deviations: N(0, 1) puts 98.8% of its mass in [-2.5, 2.5].
TRAVERSAL_LIMIT = 2.5


# ---------------------------------------------------------------------------------------------
# Computing what is drawn
# ---------------------------------------------------------------------------------------------

class _EvalMode:
    """``with _EvalMode(model):`` eval mode and no gradients, restoring the mode afterwards."""

    def __init__(self, model):
        self.model, self.was_training = model, model.training
        self.no_grad = torch.no_grad()

    def __enter__(self):
        self.model.eval()
        self.no_grad.__enter__()
        return self.model

    def __exit__(self, *exc):
        self.no_grad.__exit__(*exc)
        self.model.train(self.was_training)


def _device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _as_batch(x, model) -> torch.Tensor:
    """Images as a float batch (M, C, H, W) on the model's device; one image (C, H, W) is a batch
    of one."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be images, a tensor (M, C, 64, 64) or (C, 64, 64), got "
                        f"{type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (M, C, 64, 64) with M >= 1, or (C, 64, 64); got "
                         f"{tuple(x.shape)}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or infinite pixels; images must have finite values in "
                         "[0, 1]")
    return x.to(device=_device(model), dtype=torch.float32)


def _is_joint(model) -> bool:
    return bool(getattr(getattr(model, "config", None), "categorical_dims", ()))


def decode_images(model, z: torch.Tensor) -> torch.Tensor:
    """Decoded images in [0, 1], (M, C, 64, 64), on the CPU: sigmoid of Bernoulli logits, or
    the Gaussian means clipped to [0, 1]."""
    with _EvalMode(model):
        out = model.decode(z.to(_device(model)))
    decoder = getattr(getattr(model, "config", None), "decoder", "bernoulli")
    out = torch.sigmoid(out) if decoder == "bernoulli" else out.clamp(0, 1)
    return out.float().cpu()


def _encode(model, x) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """(mu, logvar, one-hot argmax of each categorical) of a batch."""
    with _EvalMode(model):
        if _is_joint(model):
            mu, logvar, logits = model.encode_joint(x)
            onehots = [torch.nn.functional.one_hot(l.argmax(1), l.shape[1]).float()
                       for l in logits]
        else:
            (mu, logvar), onehots = model.encode(x), []
    return mu.float(), logvar.float(), onehots


def latent_kl(model, x) -> np.ndarray:
    """Mean over the batch ``x`` of KL(q(z_j|x) || N(0, 1)) for each continuous latent j, (d,)
    in nats. The per-latent "rate": a latent with KL ~ 0 carries no information about x."""
    mu, logvar, _ = _encode(model, _as_batch(x, model))
    return _mean_kl(mu, logvar)


def _mean_kl(mu: torch.Tensor, logvar: torch.Tensor) -> np.ndarray:
    return gaussian_kl(mu, logvar).mean(0).cpu().double().numpy()


def _latent_order(kl: np.ndarray, latents: Sequence[int] | None, n_latents: int | None):
    if latents is not None:
        latents = [int(j) for j in latents]
        bad = [j for j in latents if not 0 <= j < len(kl)]
        if bad:
            raise ValueError(f"latents {bad} do not exist; the model has {len(kl)} latents "
                             f"(0 .. {len(kl) - 1})")
        return latents
    order = [int(j) for j in np.argsort(-kl, kind="stable")]   # ties keep index order
    if n_latents is not None:
        if n_latents < 1:
            raise ValueError(f"n_latents must be >= 1, got {n_latents}")
        order = order[:n_latents]
    return order


def traversal_images(model, x, *, values: Sequence[float] | None = None, n_steps: int = 9,
                     limit: float = TRAVERSAL_LIMIT, latents: Sequence[int] | None = None,
                     n_latents: int | None = None):
    """The images of a traversal: ``(images, latents, kl, values)``.

    ``images`` is (L, S, C, 64, 64): row r decodes the code of ``x[0]`` with latent
    ``latents[r]`` set to each of the S ``values``. ``latents`` defaults to every latent ordered
    by decreasing KL, measured on the whole batch ``x`` (pass a few hundred images for a stable
    order). A JointVAE keeps its categorical codes at the argmax for ``x[0]``.
    """
    if values is None:
        if n_steps < 2:
            raise ValueError(f"n_steps must be >= 2, got {n_steps}")
        values = np.linspace(-_check_limit(limit), limit, n_steps)
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all():
        raise ValueError(f"values must be a non-empty list of finite latent values, got "
                         f"{values!r:.80}")
    x = _as_batch(x, model)
    mu, logvar, onehots = _encode(model, x)
    kl = _mean_kl(mu, logvar)
    order = _latent_order(kl, latents, n_latents)
    values = torch.as_tensor(values)
    base = torch.cat([mu[:1], *[c[:1] for c in onehots]], dim=1)          # (1, code_dim)
    codes = base.repeat(len(order) * len(values), 1)
    for r, j in enumerate(order):
        codes[r * len(values):(r + 1) * len(values), j] = values.to(codes.device)
    images = decode_images(model, codes)
    return images.view(len(order), len(values), *images.shape[1:]), order, kl, values.numpy()


def _check_limit(limit) -> float:
    # "limit <= 0" is false for NaN: ask for what is wanted instead
    if not (isinstance(limit, (int, float, np.integer, np.floating)) and not isinstance(limit, bool)
            and 0 < limit < np.inf):
        raise ValueError(f"limit must be a finite number > 0 (the traversal runs over "
                         f"[-limit, limit]; default {TRAVERSAL_LIMIT}), got {limit!r}")
    return limit


def _montage(images: torch.Tensor, pad: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """(R, S, C, H, W) in [0, 1] -> one (R*(H+pad)-pad, S*(W+pad)-pad[, 3]) array."""
    r, s, c, h, w = images.shape
    canvas = torch.full((c, r * (h + pad) - pad, s * (w + pad) - pad), pad_value)
    for i in range(r):
        for j in range(s):
            canvas[:, i * (h + pad):i * (h + pad) + h, j * (w + pad):j * (w + pad) + w] = \
                images[i, j]
    arr = canvas.numpy()
    return arr[0] if c == 1 else np.transpose(arr, (1, 2, 0))


def _imshow(ax, arr: np.ndarray) -> None:
    ax.imshow(arr, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.grid(False)
    for side in ax.spines.values():
        side.set_visible(False)


# ---------------------------------------------------------------------------------------------
# Static figures of a model
# ---------------------------------------------------------------------------------------------

def plot_traversal(model, x, *, n_steps: int = 9, limit: float = TRAVERSAL_LIMIT,
                   latents: Sequence[int] | None = None, n_latents: int | None = None,
                   title: str | None = None, cell_inches: float = 0.62,
                   labels: Mapping[int, str] | None = None) -> Figure:
    """Latent traversals of ``x[0]``: one row per latent, ordered by KL, labelled with its KL.

    Args:
        model: a ``bvae_lib.models.VAE`` (or JointVAE).
        x: images (M, C, 64, 64); the traversal starts from ``x[0]``'s posterior mean and the
            KL of each latent (the row order and labels) is the mean over all M images.
        n_steps: number of values per row, evenly spaced in ``[-limit, limit]``.
        latents: which latents to show, in this order (default: all, by decreasing KL).
        n_latents: show only the ``n_latents`` latents of largest KL.
        labels: ``{latent: text}`` put before a row's latent and KL, e.g. the factor it carries.
    """
    images, order, kl, values = traversal_images(model, x, n_steps=n_steps, limit=limit,
                                                 latents=latents, n_latents=n_latents)
    labels = {int(j): str(t) for j, t in (labels or {}).items()}
    unshown = sorted(set(labels) - {int(j) for j in order})
    if unshown:
        raise ValueError(f"labels name latents {unshown} that the traversal does not show "
                         f"(rows: {[int(j) for j in order]}); label shown latents only, or "
                         f"pass latents= to show them")
    rows, steps, _, h, w = images.shape
    pad = 2
    left = 1.3 + 0.06 * max((len(t) + 2 for t in labels.values()), default=0)   # inches
    width = cell_inches * steps + left
    fig = Figure(figsize=(width, cell_inches * rows + 0.5))
    ax = fig.add_axes(((left - 0.05) / width, 0.02, 1 - left / width, 0.9))
    _imshow(ax, _montage(images, pad=pad))
    ax.set_yticks([i * (h + pad) + h / 2 for i in range(rows)])
    ax.set_yticklabels([(f"{labels[int(j)]}  " if int(j) in labels else "")
                        + f"$z_{{{j}}}$  KL {kl[j]:.2f}" for j in order], fontsize=8)
    ax.set_xticks([i * (w + pad) + w / 2 for i in range(steps)])
    ax.set_xticklabels([f"{v:+.1f}" for v in values], fontsize=7)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.set_title(title or "Latent traversals (rows by decreasing KL, nats)", fontsize=9,
                 pad=14)
    return fig


def plot_reconstructions(model, x, *, n: int = 8, title: str | None = None) -> Figure:
    """The first ``n`` images of ``x`` (top row) and their reconstructions from the posterior
    mean (bottom row), as a Bernoulli mean in [0, 1]."""
    x = _as_batch(x, model)[:n]
    mu, _, onehots = _encode(model, x)
    recon = decode_images(model, torch.cat([mu, *onehots], dim=1))
    pair = torch.stack([x.float().cpu(), recon])                      # (2, n, C, H, W)
    fig = Figure(figsize=(0.8 * len(x) + 0.9, 1.9))
    ax = fig.add_axes((0.1, 0.02, 0.88, 0.86))
    _imshow(ax, _montage(pair))
    h = x.shape[-2]
    ax.set_yticks([h / 2, h + 2 + h / 2])
    ax.set_yticklabels(["data", "recon."], fontsize=8)
    ax.set_xticks([])
    ax.tick_params(length=0)
    ax.set_title(title or "Reconstructions (decoder mean at $z = \\mu(x)$)", fontsize=9)
    return fig


def plot_kl_per_latent(kl, x=None, *, sort: bool = False, ax=None,
                       title: str | None = None) -> Figure:
    """Bar chart of the KL of each latent dimension, in nats.

    ``kl`` is an array (d,) -- e.g. ``history["kl_per_latent"][-1]`` or :func:`latent_kl` -- or a
    model, in which case the KL is measured on the images ``x``.
    """
    if isinstance(kl, torch.nn.Module):
        if x is None:
            raise ValueError("plot_kl_per_latent(model, x): pass the images x to measure the KL on")
        kl = latent_kl(kl, x)
    kl = np.asarray(kl.detach().cpu() if isinstance(kl, torch.Tensor) else kl, dtype=float)
    if kl.ndim != 1 or kl.size == 0 or not np.isfinite(kl).all():
        raise ValueError(f"kl must be one value per latent, finite, shape (d,), got "
                         f"{kl.shape} {kl!r:.80}")
    idx = np.argsort(-kl, kind="stable") if sort else np.arange(len(kl))
    fig, ax = _fig_ax(ax, figsize=(max(3.0, 0.42 * len(kl) + 1.2), 2.6))
    ax.bar(range(len(kl)), kl[idx], color="C0")
    ax.set_xticks(range(len(kl)))
    ax.set_xticklabels([f"$z_{{{j}}}$" for j in idx])
    ax.set_ylabel("KL (nats)")
    ax.set_title(title or f"KL per latent (total {kl.sum():.2f} nats)")
    return fig


def _fig_ax(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


# ---------------------------------------------------------------------------------------------
# Training and sweeps
# ---------------------------------------------------------------------------------------------

#: Axis labels of the terms a bvae_lib objective reports (others get their own name).
TERM_LABELS = {
    "loss": "loss (minimised)",
    "recon": "reconstruction $-\\log p(x|z)$",
    "kl": "KL $(q(z|x)\\,\\|\\,p(z))$",
    "kl_per_latent": "KL per latent",
    "mi": "index-code MI",
    "tc": "total correlation",
    "dim_kl": "dimension-wise KL",
    "capacity": "capacity $C$",
    "kl_cont": "KL continuous",
    "kl_disc": "KL discrete",
}


def plot_training_curves(history: Mapping[str, Sequence], *, terms: Sequence[str] | None = None,
                         log_y: Sequence[str] = (), ncols: int = 3) -> Figure:
    """One panel per loss term of a ``bvae_lib.train`` history, against the training step.

    ``history`` maps term -> list of values (one per log window) and ``"step"`` -> the step of
    each. Vector terms (``kl_per_latent``) get one line per latent. ``terms`` picks and orders
    the panels (default: every term, ``loss`` first); ``log_y`` names terms drawn on a log axis.
    """
    if "step" not in history:
        raise ValueError(f"history must have a 'step' entry (bvae_lib.train's history does); "
                         f"got keys {sorted(history)}")
    steps = np.asarray(history["step"], dtype=float)
    if terms is None:
        terms = [k for k in history if k != "step"]
        terms.sort(key=lambda k: (list(TERM_LABELS).index(k) if k in TERM_LABELS
                                  else len(TERM_LABELS), k))
    missing = [t for t in terms if t not in history]
    if missing:
        raise ValueError(f"terms {missing} are not in the history (it has {sorted(history)})")
    if not terms:
        raise ValueError("history has no loss terms to plot")
    ncols = min(ncols, len(terms))
    nrows = -(-len(terms) // ncols)
    fig = Figure(figsize=(3.3 * ncols, 2.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, term in zip(axes, terms):
        values = np.asarray(history[term], dtype=float)
        if len(values) != len(steps):
            raise ValueError(f"history['{term}'] has {len(values)} entries but history['step'] "
                             f"has {len(steps)}")
        if values.ndim == 2:
            for j in range(values.shape[1]):
                ax.plot(steps, values[:, j], lw=1.2, label=f"$z_{{{j}}}$")
            if values.shape[1] <= 12:    # outside the axes: curves start where labels would be
                ax.legend(fontsize=6, ncols=1 + (values.shape[1] > 6), loc="upper left",
                          bbox_to_anchor=(1.0, 1.0), handlelength=1.0, columnspacing=0.6)
        else:
            ax.plot(steps, values, color="C0")
        if term in log_y:
            ax.set_yscale("log")
        ax.set_title(TERM_LABELS.get(term, term), fontsize=9)
        ax.set_xlabel("step")
    for ax in axes[len(terms):]:
        ax.set_visible(False)
    return fig


def _kl_history(history: Mapping[str, Sequence]) -> tuple[np.ndarray, np.ndarray]:
    for key in ("step", "kl_per_latent"):
        if key not in history:
            raise ValueError(f"history must have '{key}' (bvae_lib.train's history and a zoo "
                             f"manifest's 'history' do); got keys {sorted(history)}")
    steps = np.asarray(history["step"], dtype=np.int64)
    kl = np.asarray(history["kl_per_latent"], dtype=float)
    if kl.ndim != 2 or kl.shape[0] != steps.shape[0]:
        raise ValueError(f"history['kl_per_latent'] must have one row per step, got shape "
                         f"{kl.shape} for {steps.shape[0]} steps")
    return steps, kl


def switch_on_steps(history: Mapping[str, Sequence], threshold: float = 0.5) -> dict[int, int]:
    """``{latent: step}`` for every latent whose logged KL ever exceeds ``threshold`` nats: the
    first logged step at which it does, in switch-on order (ties by latent index).

    ``history`` is a ``bvae_lib.train`` history or a zoo manifest's ``history``; each entry is the
    mean KL over one log window, so a step is known to the window's length.
    """
    steps, kl = _kl_history(history)
    above = kl > threshold
    on = {j: int(steps[np.argmax(above[:, j])]) for j in range(kl.shape[1]) if above[:, j].any()}
    return dict(sorted(on.items(), key=lambda item: (item[1], item[0])))


def plot_kl_history(history: Mapping[str, Sequence], *, labels: Mapping[int, str] | None = None,
                    threshold: float | None = None, ax=None, title: str | None = None) -> Figure:
    """The KL of each latent against the training step, and the capacity C(t) when the history
    has one (capacity-annealed objectives): the picture of latents switching on one by one.

    ``labels`` names latents in the legend (e.g. the factor each carries); unlabelled latents
    are drawn thin and grey. ``threshold`` draws a dotted line at that KL.
    """
    steps, kl = _kl_history(history)
    fig, ax = _fig_ax(ax, (6, 3.2))
    labels = {int(j): str(t) for j, t in (labels or {}).items()}
    bad = [j for j in labels if not 0 <= j < kl.shape[1]]
    if bad:
        raise ValueError(f"labels name latents {bad}, but the history has {kl.shape[1]} latents")
    for j in range(kl.shape[1]):
        if j in labels:
            ax.plot(steps, kl[:, j], lw=1.4, label=f"$z_{{{j}}}$: {labels[j]}")
        else:
            ax.plot(steps, kl[:, j], lw=0.8, color="0.65")
    if "capacity" in history:
        ax.plot(steps, np.asarray(history["capacity"], dtype=float), "k--", lw=1,
                label="capacity $C(t)$ (total)")
    if threshold is not None:
        ax.axhline(threshold, color="k", lw=0.6, ls=":")
    ax.set_xlabel("training step")
    ax.set_ylabel("KL (nats)")
    ax.set_title(title or "KL of each latent during training", fontsize=9)
    if labels or "capacity" in history:
        ax.legend(fontsize=7)
    return fig


def plot_rate_distortion(rates, distortions, *, betas=None, curve=None, ax=None,
                         label: str | None = None, title: str | None = None) -> Figure:
    """Distortion (reconstruction, nats) against rate (KL, nats) for a sweep of runs.

    ``betas`` annotates each point with its beta; ``curve = (rates, distortions)`` draws a
    reference curve (e.g. the closed-form optimum of a linear-Gaussian model) as a line.
    """
    rates = np.asarray(rates, dtype=float)
    distortions = np.asarray(distortions, dtype=float)
    if rates.shape != distortions.shape or rates.ndim != 1:
        raise ValueError(f"rates and distortions must be 1-D of the same length, got "
                         f"{rates.shape} and {distortions.shape}")
    fig, ax = _fig_ax(ax, figsize=(4.6, 3.4))
    if curve is not None:
        ax.plot(*[np.asarray(c, dtype=float) for c in curve], color="0.5", lw=1.2,
                label="reference")
    ax.plot(rates, distortions, "o-", color="C1", label=label or "runs")
    if betas is not None:
        for r, d, b in zip(rates, distortions, np.asarray(betas, dtype=float)):
            ax.annotate(f"β={b:g}", (r, d), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
    ax.set_xlabel("rate: KL$(q(z|x)\\,\\|\\,p(z))$ (nats)")
    ax.set_ylabel("distortion: $-\\mathbb{E}\\,\\log p(x|z)$ (nats)")
    ax.set_title(title or "Rate–distortion")
    if curve is not None or label is not None:
        ax.legend(fontsize=8)
    return fig


def plot_metric_vs_beta(betas, scores, *, metric: str = "score", ax=None, log_x: bool = True,
                        title: str | None = None) -> Figure:
    """A disentanglement metric against beta.

    ``scores`` is a 1-D array (one run per beta), a 2-D array (seeds x betas: the mean is drawn
    with a band of one standard deviation and the runs as dots), or a dict name -> either, for
    several metrics or models on one plot.
    """
    betas = np.asarray(betas, dtype=float)
    series = scores if isinstance(scores, Mapping) else {metric: scores}
    fig, ax = _fig_ax(ax, figsize=(4.6, 3.2))
    for i, (name, s) in enumerate(series.items()):
        s = np.asarray(s, dtype=float)
        if s.ndim == 1:
            s = s[None]
        if s.ndim != 2 or s.shape[1] != len(betas):
            raise ValueError(f"scores for '{name}' must have one column per beta "
                             f"({len(betas)}), got shape {s.shape}")
        mean = s.mean(0)
        ax.plot(betas, mean, "o-", color=f"C{i}", label=name)
        if s.shape[0] > 1:
            std = s.std(0)
            ax.fill_between(betas, mean - std, mean + std, color=f"C{i}", alpha=0.2, lw=0)
            for row in s:
                ax.plot(betas, row, ".", color=f"C{i}", alpha=0.4, ms=4)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("β")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} against β")
    if len(series) > 1:
        ax.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------
# Moving pictures
# ---------------------------------------------------------------------------------------------

def _traversal_frames(model, x, n_frames, limit, latents, n_latents):
    """(frames, order, kl): frame t shows, side by side, x[0] decoded with each chosen latent set
    to the t-th value of a sweep -limit .. limit."""
    values = np.linspace(-_check_limit(limit), limit, n_frames)
    images, order, kl, _ = traversal_images(model, x, values=values, latents=latents,
                                            n_latents=n_latents)
    frames = [_montage(images[:, t][None]) for t in range(n_frames)]   # (H, L*(W+2)-2)
    return frames, order, kl, values


def animate_traversal(model, x, *, n_frames: int = 16, limit: float = TRAVERSAL_LIMIT,
                      latents: Sequence[int] | None = None, n_latents: int | None = 6,
                      fps: int = 6, scale: int = 2):
    """A traversal as a JavaScript animation (``IPython.display.HTML``) that plays in the HTML
    book without a kernel: panel r moves latent ``latents[r]`` from ``-limit`` to ``limit`` and
    back, all panels at once; the caption names each panel's latent and KL.

    The HTML is deterministic, so nbval can compare it: matplotlib's random element ids are
    replaced by a hash of the content, frames are drawn pixel for pixel (``figimage``, no text,
    no anti-aliasing) and saved without the "Software" PNG tag that names the matplotlib
    version. Defaults keep it small (about 100-200 kB in the notebook).
    """
    from IPython.display import HTML
    from matplotlib.animation import FuncAnimation, HTMLWriter

    if not (isinstance(scale, int) and scale >= 1):
        raise ValueError(f"scale must be a positive integer (pixel repetition), got {scale!r}")
    frames, order, kl, values = _traversal_frames(model, x, n_frames, limit, latents,
                                                  n_latents)
    frames = [np.kron(f, np.ones((scale, scale))) if f.ndim == 2 else
              np.repeat(np.repeat(f, scale, 0), scale, 1) for f in frames]
    h, w = frames[0].shape[:2]
    dpi = 100
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    image = fig.figimage(frames[0], cmap="gray", vmin=0, vmax=1, resize=False)

    def update(t):
        image.set_data(frames[t])
        return (image,)

    anim = FuncAnimation(fig, update, frames=len(frames), interval=1000 / fps, blit=False)
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "traversal.html")
        writer = HTMLWriter(fps=fps, embed_frames=True, default_mode="reflect")
        anim.save(str(path), writer=writer, dpi=dpi,
                  savefig_kwargs={"metadata": {"Software": None}})
        html = path.read_text()
    html = _deterministic_ids(html)
    caption = ", ".join(f"z<sub>{j}</sub> (KL {kl[j]:.2f})" for j in order)
    html += (f'\n<p style="font-size:85%">Panels, left to right: {caption}. Each sweeps its '
             f'latent from {values[0]:+.1f} to {values[-1]:+.1f} (prior standard deviations) '
             f'while the others stay at the posterior mean of the image.</p>')
    return HTML(html)


def _deterministic_ids(html: str) -> str:
    """Replace the random uuid4 hex ids of matplotlib's HTMLWriter by a hash of the page."""
    ids = set(re.findall(r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])", html))
    stripped = html
    for i in ids:
        stripped = stripped.replace(i, "")
    digest = "bvae" + hashlib.sha256(stripped.encode()).hexdigest()[:12]
    for k, i in enumerate(sorted(ids)):
        html = html.replace(i, f"{digest}{k}" if len(ids) > 1 else digest)
    return html


def interactive_traversal(model, x, *, n_latents: int | None = None,
                          limit: float = 3.0, scale: int = 4):
    """Sliders for the latents of ``x[0]`` (ordered by KL) and the decoded image, updated live.

    Needs a running kernel (Jupyter, Colab) and ``ipywidgets`` (``pip install
    "bvae-lib[notebook]"``); the static HTML book shows :func:`animate_traversal` instead.
    Returns the widget (display it by ending a cell with it).
    """
    try:
        import ipywidgets as widgets
    except ImportError as e:   # optional dependency
        raise ImportError("interactive_traversal needs ipywidgets: pip install "
                          "'bvae-lib[notebook]' (or pip install ipywidgets)") from e
    xb = _as_batch(x, model)
    mu, logvar, onehots = _encode(model, xb)
    kl = _mean_kl(mu, logvar)
    order = _latent_order(kl, None, n_latents)
    base = torch.cat([mu[:1], *[c[:1] for c in onehots]], dim=1)

    def png(code) -> bytes:
        img = decode_images(model, code)[0]
        arr = img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()
        arr = np.kron(arr, np.ones((scale, scale))) if arr.ndim == 2 else \
            np.repeat(np.repeat(arr, scale, 0), scale, 1)
        buf = io.BytesIO()
        matplotlib.image.imsave(buf, arr, cmap="gray", vmin=0, vmax=1, format="png")
        return buf.getvalue()

    image = widgets.Image(value=png(base), format="png")
    sliders = [widgets.FloatSlider(value=float(base[0, j]), min=-limit, max=limit, step=0.1,
                                   description=f"z{j} ({kl[j]:.2f})",
                                   continuous_update=True,
                                   style={"description_width": "initial"})
               for j in order]

    def redraw(_change=None):
        code = base.clone()
        for j, s in zip(order, sliders):
            code[0, j] = s.value
        image.value = png(code)

    for s in sliders:
        s.observe(redraw, names="value")
    reset = widgets.Button(description="reset to x")

    def on_reset(_):
        for j, s in zip(order, sliders):
            s.value = float(base[0, j])

    reset.on_click(on_reset)
    return widgets.HBox([image, widgets.VBox([*sliders, reset])])


# ---------------------------------------------------------------------------------------------
# Swaps of code parts (Dual-Swap Disentangling)
# ---------------------------------------------------------------------------------------------

def plot_swap_grid(model, x, partners, parts: Mapping[str, Sequence[int]], *,
                   title: str | None = None, cell_inches: float = 0.62) -> Figure:
    """What each part of a code carries: one image's code with one part taken from another image.

    The top row shows the data: ``x[0]`` (image A, top left) and the P ``partners`` (images B_j).
    Row k below it decodes A's code with the latents ``parts[name_k]`` replaced by B_j's, in the
    column of B_j; the row is labelled with the factor the part is meant to carry, and its first
    cell shows A again. A part that carries its factor and only it gives A with B_j's value of
    that factor, and nothing else of B_j. Codes are the encoder's means (the decoder's input
    order: continuous latents, then a JointVAE's one-hot categories), decoded as in
    :func:`decode_images`.

    Args:
        model: an autoencoder with ``encode`` (images -> (means, ...)) and ``decode``, e.g. a
            ``bvae_lib.models.VAE`` trained with ``DualSwapConfig``.
        x: images (M, C, 64, 64) or one image (C, 64, 64); the grid starts from ``x[0]``.
        partners: the P images (P, C, 64, 64) whose parts are swapped in, one column each.
        parts: {factor name: latent indices}, one row each, in this order -- e.g.
            ``build_objective(DualSwapConfig(...)).parts(dataset.factor_names)``, or
            ``{name: [j]}`` for a VAE's best latent per factor
            (:func:`bvae_lib.metrics.factor_alignment`).
    """
    a = _as_batch(x, model)[:1]
    b = _as_batch(partners, model)
    if b.shape[1:] != a.shape[1:]:
        shape = ", ".join(str(n) for n in a.shape[1:])
        raise ValueError(f"partners must be images shaped like x, (P, {shape}); got "
                         f"{tuple(b.shape)}")
    if not isinstance(parts, Mapping) or not parts:
        raise ValueError(f"parts must map factor names to the latents that carry them, e.g. "
                         f"{{'position_x': [6, 7]}}; got {parts!r}")
    mu, _, onehots = _encode(model, torch.cat([a, b]))
    codes = torch.cat([mu, *onehots], dim=1)
    d = codes.shape[1]
    rows = []
    for name, latents in parts.items():
        idx = np.atleast_1d(np.asarray(latents))
        if (idx.size == 0 or idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer)
                or idx.min() < 0 or idx.max() >= d):
            raise ValueError(f"the part of {name!r} must be a non-empty list of latent indices "
                             f"in [0, {d - 1}] (the code has {d} dimensions), got {latents!r}")
        hybrid = codes[:1].repeat(len(b), 1)
        cols = torch.as_tensor(idx.astype(np.int64), device=codes.device)
        hybrid[:, cols] = codes[1:][:, cols]
        rows.append(decode_images(model, hybrid))                     # (P, C, H, W)
    data = torch.cat([a, b]).float().cpu()
    first = torch.cat([data[:1]] * len(rows))                          # A at the head of each row
    grid = torch.stack([data, *[torch.cat([first[i:i + 1], r]) for i, r in enumerate(rows)]])
    n_rows, n_cols, _, h, w = grid.shape
    pad = 2
    left, top, bottom = 1.3, 0.65, 0.05                               # inches: labels, title
    width, height = cell_inches * n_cols, cell_inches * n_rows
    fig = Figure(figsize=(left + width + 0.05, bottom + height + top))
    ax = fig.add_axes((left / (left + width + 0.05), bottom / (bottom + height + top),
                       width / (left + width + 0.05), height / (bottom + height + top)))
    _imshow(ax, _montage(grid, pad=pad))
    ax.set_yticks([i * (h + pad) + h / 2 for i in range(n_rows)])
    ax.set_yticklabels(["data"] + [f"swap {name}" for name in parts], fontsize=8)
    ax.set_xticks([j * (w + pad) + w / 2 for j in range(n_cols)])
    ax.set_xticklabels(["A"] + [f"$B_{{{j + 1}}}$" for j in range(n_cols - 1)], fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.axhline(h + pad / 2 - 0.5, color="C1", lw=1.0)                 # data | swaps
    ax.axvline(w + pad / 2 - 0.5, color="C1", lw=1.0)                 # A | partners
    ax.set_title(title or "A's code with one part from $B_j$'s", fontsize=9, pad=14)
    return fig
