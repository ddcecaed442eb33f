"""bvae_lib.viz: the figures show what they claim to show.

Most tests use a tiny stub "VAE" whose per-latent KL and decoder are known exactly: latent j
lights up the j-th horizontal band of the image, latent 3 is ignored by the decoder.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from bvae_lib import viz
from bvae_lib.distributions import gaussian_kl

D_LAT = 4
MU = torch.tensor([0.5, 2.0, 1.0, 0.0])          # KL per latent (logvar 0) = mu^2 / 2
LOGVAR = torch.zeros(D_LAT)


class StubVAE(torch.nn.Module):
    """encode -> fixed (MU, LOGVAR); decode: band j of the image has logit 4*z_j (j < 3)."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(decoder="bernoulli", categorical_dims=(), latent_dim=D_LAT)
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def encode(self, x):
        m = x.shape[0]
        return MU.expand(m, D_LAT).clone(), LOGVAR.expand(m, D_LAT).clone()

    def decode(self, z):
        out = torch.zeros(z.shape[0], 1, 64, 64)
        for j in range(3):                       # latent 3 is ignored: a collapsed latent
            out[:, :, 16 * j:16 * (j + 1)] = 4 * z[:, j, None, None, None]
        return out


@pytest.fixture
def stub():
    return StubVAE()


@pytest.fixture
def x():
    return torch.zeros(5, 1, 64, 64)


@pytest.fixture(autouse=True)
def no_pyplot_figures():
    """No viz function may open a pyplot figure (it would be shown twice in a notebook)."""
    plt.close("all")
    yield
    assert plt.get_fignums() == [], "a viz function created a pyplot figure"


def test_latent_kl_is_the_closed_form_gaussian_kl(stub, x):
    expected = gaussian_kl(MU, LOGVAR).numpy()
    np.testing.assert_allclose(viz.latent_kl(stub, x), expected, rtol=1e-6)


def test_traversal_rows_are_ordered_by_kl_and_each_moves_only_its_latent(stub, x):
    images, order, kl, values = viz.traversal_images(stub, x, n_steps=5)
    assert order == [1, 2, 0, 3]                              # KL 2.0, 0.5, 0.125, 0
    assert images.shape == (4, 5, 1, 64, 64)
    np.testing.assert_allclose(values, np.linspace(-2.5, 2.5, 5))
    for r, j in enumerate(order):
        row = images[r]                                       # (S, 1, 64, 64)
        varies = (row.max(0).values - row.min(0).values).squeeze(0)   # (64, 64)
        moving_rows = set(torch.nonzero(varies.amax(1) > 1e-6).flatten().tolist())
        expected = set(range(16 * j, 16 * (j + 1))) if j < 3 else set()
        assert moving_rows == expected, f"row for z_{j} changes pixel rows {sorted(moving_rows)}"
    # the value of the traversed latent is the one set: band 1 at value v has sigmoid(4 v)
    np.testing.assert_allclose(images[0, :, 0, 20, 0], torch.sigmoid(4 * torch.tensor(values)),
                               rtol=1e-6)


def test_plot_traversal_labels_each_row_with_its_kl(stub, x):
    fig = viz.plot_traversal(stub, x, n_steps=5)
    assert isinstance(fig, Figure)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    kl = gaussian_kl(MU, LOGVAR).numpy()
    assert labels == [f"$z_{{{j}}}$  KL {kl[j]:.2f}" for j in (1, 2, 0, 3)]


def test_plot_traversal_n_latents_and_explicit_latents(stub, x):
    fig = viz.plot_traversal(stub, x, n_latents=2)
    assert len(fig.axes[0].get_yticklabels()) == 2
    fig = viz.plot_traversal(stub, x, latents=[3, 0])
    assert [t.get_text()[:6] for t in fig.axes[0].get_yticklabels()] == ["$z_{3}", "$z_{0}"]
    with pytest.raises(ValueError, match="latents"):
        viz.plot_traversal(stub, x, latents=[7])


def test_viz_restores_training_mode(stub, x):
    stub.train()
    viz.plot_traversal(stub, x)
    viz.plot_reconstructions(stub, x)
    assert stub.training


def test_reconstructions_and_kl_bars(stub, x):
    fig = viz.plot_reconstructions(stub, x, n=3)
    assert isinstance(fig, Figure)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["data", "recon."]
    fig = viz.plot_kl_per_latent(stub, x, sort=True)
    heights = [p.get_height() for p in fig.axes[0].patches]
    np.testing.assert_allclose(heights, [2.0, 0.5, 0.125, 0.0], rtol=1e-6)
    with pytest.raises(ValueError, match="one value per latent"):
        viz.plot_kl_per_latent(np.zeros((2, 2)))


def test_training_curves_have_one_panel_per_term_and_one_line_per_latent():
    history = {"step": [10, 20, 30], "loss": [3.0, 2.0, 1.0], "recon": [2.0, 1.5, 0.7],
               "kl": [1.0, 0.5, 0.3], "kl_per_latent": [[0.5, 0.5], [0.3, 0.2], [0.2, 0.1]]}
    fig = viz.plot_training_curves(history)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 4
    assert visible[0].get_title() == viz.TERM_LABELS["loss"]
    per_latent = [ax for ax in visible if ax.get_title() == viz.TERM_LABELS["kl_per_latent"]][0]
    assert len(per_latent.get_lines()) == 2
    np.testing.assert_allclose(per_latent.get_lines()[1].get_ydata(), [0.5, 0.2, 0.1])
    with pytest.raises(ValueError, match="step"):
        viz.plot_training_curves({"loss": [1.0]})
    with pytest.raises(ValueError, match="not in the history"):
        viz.plot_training_curves(history, terms=["tc"])


def test_training_curves_of_a_real_training_history():
    from bvae_lib.data import DSprites
    from bvae_lib.models import ModelConfig
    from bvae_lib.objectives import BetaVAEConfig
    from bvae_lib.train import TrainConfig, train
    result = train(ModelConfig(architecture="higgins_mlp", latent_dim=3), BetaVAEConfig(beta=4),
                   DSprites(), TrainConfig(steps=4, batch_size=8, log_every=2, progress=False,
                                           device="cpu"))
    fig = viz.plot_training_curves(result.history)
    titles = {ax.get_title() for ax in fig.axes if ax.get_visible()}
    assert {viz.TERM_LABELS[k] for k in ("loss", "recon", "kl", "kl_per_latent")} <= titles


def test_rate_distortion_and_metric_vs_beta():
    fig = viz.plot_rate_distortion([1, 2, 3], [30, 20, 15], betas=[8, 4, 1],
                                   curve=([0.5, 4], [35, 12]))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["β=8", "β=4", "β=1"]
    with pytest.raises(ValueError, match="same length"):
        viz.plot_rate_distortion([1, 2], [1])
    fig = viz.plot_metric_vs_beta([1, 4, 16], [[0.5, 0.7, 0.6], [0.7, 0.9, 0.6]], metric="MIG")
    mean_line = fig.axes[0].get_lines()[0]
    np.testing.assert_allclose(mean_line.get_ydata(), [0.6, 0.8, 0.6])
    assert fig.axes[0].get_xscale() == "log"
    with pytest.raises(ValueError, match="one column per beta"):
        viz.plot_metric_vs_beta([1, 2], [0.1, 0.2, 0.3])


def test_animation_html_is_deterministic_and_has_no_random_ids(stub, x):
    a = viz.animate_traversal(stub, x, n_frames=4, n_latents=2).data
    b = viz.animate_traversal(stub, x, n_frames=4, n_latents=2).data
    assert a == b
    assert not re.search(r"[0-9a-f]{32}", a)
    assert "<script" in a and a.count("data:image/png;base64") == 4
    assert "z<sub>1</sub> (KL 2.00)" in a
    assert "Software" not in a                                # no matplotlib version in frames
    c = viz.animate_traversal(stub, x, n_frames=4, n_latents=3).data
    ids = lambda html: set(re.findall(r'id="_anim_img(\w+)"', html))   # noqa: E731
    assert ids(a) != ids(c), "different animations must not share element ids on one page"


def test_animation_frames_sweep_the_latent(stub, x):
    frames, order, _, values = viz._traversal_frames(stub, x, 3, 2.5, None, 1)
    assert order == [1]
    # band 1 of the one panel equals sigmoid(4 v) in frame t
    got = [f[20, 0] for f in frames]
    np.testing.assert_allclose(got, torch.sigmoid(4 * torch.tensor(values)).numpy(), rtol=1e-6)


def test_interactive_traversal_sliders_redraw_the_image(stub, x):
    pytest.importorskip("ipywidgets")
    w = viz.interactive_traversal(stub, x)
    image, controls = w.children
    sliders = controls.children[:-1]
    assert [s.description.split()[0] for s in sliders] == ["z1", "z2", "z0", "z3"]
    before = image.value
    sliders[0].value = -2.0
    assert image.value != before
    after = image.value
    sliders[3].value = 2.0                                    # the ignored latent
    assert image.value == after


def test_matplotlib_backend_untouched():
    """viz must not switch backends (the notebook's inline backend must stay)."""
    backend = matplotlib.get_backend()
    viz.plot_metric_vs_beta([1, 2], [0.1, 0.2])
    assert matplotlib.get_backend() == backend


def test_switch_on_steps_and_kl_history_plot():
    history = {"step": [10, 20, 30, 40],
               "kl_per_latent": [[0.1, 0.0, 0.0], [0.6, 0.0, 0.2], [1.0, 0.0, 0.7], [1.5, 0.1, 0.9]],
               "capacity": [0.5, 1.0, 1.5, 2.0]}
    assert viz.switch_on_steps(history) == {0: 20, 2: 30}
    assert list(viz.switch_on_steps(history, threshold=0.05)) == [0, 2, 1]
    fig = viz.plot_kl_history(history, labels={0: "position", 2: "scale"}, threshold=0.5)
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["$z_{0}$: position", "$z_{2}$: scale", "capacity $C(t)$ (total)"]
    with pytest.raises(ValueError, match="kl_per_latent"):
        viz.switch_on_steps({"step": [1]})
    with pytest.raises(ValueError, match="one row per step"):
        viz.plot_kl_history({"step": [1, 2], "kl_per_latent": [[0.0]]})
    with pytest.raises(ValueError, match="3 latents"):
        viz.plot_kl_history(history, labels={5: "shape"})


def test_plot_traversal_names_the_factor_a_row_carries(stub, x):
    fig = viz.plot_traversal(stub, x, latents=[1, 0], labels={0: "scale"})
    kl = gaussian_kl(MU, LOGVAR).numpy()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == [f"$z_{{1}}$  KL {kl[1]:.2f}", f"scale  $z_{{0}}$  KL {kl[0]:.2f}"]
    assert fig.get_size_inches()[0] > viz.plot_traversal(stub, x, latents=[1, 0]).get_size_inches()[0]
    with pytest.raises(ValueError, match="does not show"):
        viz.plot_traversal(stub, x, latents=[1, 0], labels={3: "shape"})
