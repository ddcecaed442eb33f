"""bvae_lib.viz.plot_swap_grid: the grid shows A, the partners, and A with each part swapped in.

An autoencoder factorised by construction (three factors, each drawn as one 8 x 8 block in its
own band of the image; part k of the code holds factor k) makes every cell of the grid known
exactly: A's factors with factor k taken from the column's image."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from bvae_lib import viz

SIZES = (4, 3, 5)


def render(factors: torch.Tensor) -> torch.Tensor:
    """Factor k with value v: the block in row band k, column band v."""
    x = torch.zeros(len(factors), 1, 64, 64)
    for i, row in enumerate(factors.tolist()):
        for k, v in enumerate(row):
            x[i, 0, 8 * k:8 * k + 8, 8 * v:8 * v + 8] = 1.0
    return x


class Oracle(torch.nn.Module):
    """Part k (latents 2k, 2k + 1) holds factor k's value in its first latent; the decoder draws
    the factors it reads with logits +-30 (so its images are exact to ~1e-13 a pixel)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def encode(self, x):
        z = torch.zeros(len(x), 6)
        for k in range(3):
            band = x[:, 0, 8 * k:8 * k + 8].reshape(len(x), 8, 8, 8).mean((1, 3))
            z[:, 2 * k] = band.argmax(1).float()
        return z, torch.zeros_like(z)

    def decode(self, z):
        f = torch.stack([z[:, 2 * k].round().clamp(0, SIZES[k] - 1) for k in range(3)], 1)
        return (render(f.long()) * 2 - 1) * 30


PARTS = {"a": [0, 1], "b": [2, 3], "c": [4, 5]}
FA = torch.tensor([[0, 0, 0]])
FB = torch.tensor([[3, 2, 4], [1, 1, 2]])


@pytest.fixture(autouse=True)
def no_pyplot_figures():
    """No viz function may open a pyplot figure (it would be shown twice in a notebook)."""
    plt.close("all")
    yield
    assert plt.get_fignums() == []


def cells(fig: Figure, rows: int, cols: int) -> np.ndarray:
    """The (rows, cols, 64, 64) images of the montage (2-pixel padding)."""
    arr = np.asarray(fig.axes[0].images[0].get_array())
    assert arr.shape == (rows * 66 - 2, cols * 66 - 2)
    return np.stack([np.stack([arr[66 * i:66 * i + 64, 66 * j:66 * j + 64] for j in range(cols)])
                     for i in range(rows)])


def test_each_cell_is_a_with_the_rows_factor_from_the_columns_image():
    fig = viz.plot_swap_grid(Oracle(), render(FA), render(FB), PARTS)
    assert isinstance(fig, Figure)
    grid = cells(fig, rows=4, cols=3)
    a, b = render(FA)[0, 0].numpy(), render(FB)[:, 0].numpy()
    np.testing.assert_array_equal(grid[0, 0], a)                    # data row: A, then B_j
    np.testing.assert_array_equal(grid[0, 1:], b)
    for k in range(3):
        np.testing.assert_array_equal(grid[k + 1, 0], a)            # each row starts with A
        for j in range(2):
            target = FA.clone()
            target[0, k] = FB[j, k]
            np.testing.assert_allclose(grid[k + 1, j + 1], render(target)[0, 0].numpy(),
                                       atol=1e-6)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["data", "swap a", "swap b", "swap c"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["A", "$B_{1}$", "$B_{2}$"]


def test_rows_follow_the_parts_given_so_a_mislabelled_part_shows_the_other_factor():
    fig = viz.plot_swap_grid(Oracle(), render(FA)[0], render(FB)[:1], {"a": [2, 3]})
    grid = cells(fig, rows=2, cols=2)
    target = FA.clone()
    target[0, 1] = FB[0, 1]                                         # factor b moves, not a
    np.testing.assert_allclose(grid[1, 1], render(target)[0, 0].numpy(), atol=1e-6)


def test_wrong_arguments_say_what_to_pass():
    oracle, a, b = Oracle(), render(FA), render(FB)
    with pytest.raises(ValueError, match="parts must map factor names"):
        viz.plot_swap_grid(oracle, a, b, {})
    with pytest.raises(ValueError, match="part of 'a' must be .* in \\[0, 5\\]"):
        viz.plot_swap_grid(oracle, a, b, {"a": [6]})
    with pytest.raises(ValueError, match="part of 'a'"):
        viz.plot_swap_grid(oracle, a, b, {"a": []})
    with pytest.raises(ValueError, match="partners must be images shaped like x"):
        viz.plot_swap_grid(oracle, a, torch.zeros(2, 3, 64, 64), PARTS)
    with pytest.raises(TypeError, match="x must be images"):
        viz.plot_swap_grid(oracle, [0.0], b, PARTS)
