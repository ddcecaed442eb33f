"""Properties of the ground-truth data that would fail if the data were wrong."""

import itertools
import math
import struct

import numpy as np
import pytest
import torch

from bvae_lib.data import (DSPRITES_FILENAME, DSprites, DSpritesFile, TensorImages, load_celeba,
                           load_mnist)

SHAPE, SCALE, ORIENT, PX, PY = range(5)


@pytest.fixture(scope="module")
def ds():
    return DSprites()


def render(ds, rows):
    return ds.images_from_factors(torch.tensor(rows))


def centroid(img):
    """(x, y) centroid in pixels: x along columns, y along rows."""
    img = img.reshape(64, 64).double()
    mass = img.sum()
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    return float((img * xs).sum() / mass), float((img * ys).sum() / mass)


def test_factor_grid_and_length_match_the_official_file(ds):
    assert ds.factor_names == ("shape", "scale", "orientation", "position_x", "position_y")
    assert ds.factor_sizes == (3, 6, 40, 32, 32)
    assert len(ds) == 737_280


def test_index_and_factors_round_trip_on_every_corner_of_the_grid(ds):
    corners = torch.tensor(list(itertools.product(*[(0, s - 1) for s in ds.factor_sizes])))
    idx = ds.index(corners)
    expected = [sum(int(f) * math.prod(ds.factor_sizes[k + 1:]) for k, f in enumerate(row))
                for row in corners]
    assert idx.tolist() == expected
    assert torch.equal(ds.factors(idx), corners)
    assert idx.min() == 0 and idx.max() == len(ds) - 1


def test_position_y_varies_fastest_as_in_the_official_file(ds):
    assert ds.factors([0, 1, 32]).tolist() == [[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 0]]


def test_random_indices_round_trip(ds):
    idx = torch.randint(0, len(ds), (1000,), generator=torch.Generator().manual_seed(1))
    assert torch.equal(ds.index(ds.factors(idx)), idx)


def test_images_are_binary_float32_64x64(ds):
    x = ds.images(torch.arange(0, len(ds), 7919))
    assert x.dtype == torch.float32 and x.shape[1:] == (1, 64, 64)
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert (x.sum(dim=(1, 2, 3)) > 0).all(), "every image shows an object"


def test_centroid_moves_monotonically_with_position_x_and_only_with_it(ds):
    for shape in range(3):
        rows = [[shape, 3, 7, px, 10] for px in range(32)]
        cents = [centroid(im) for im in render(ds, rows)]
        xs, ys = np.array(cents).T
        assert np.all(np.diff(xs) > 0), f"shape {shape}: x centroid must increase with position x"
        assert np.ptp(ys) < 0.5, f"shape {shape}: y centroid moved by {np.ptp(ys):.2f} px"


def test_centroid_moves_monotonically_with_position_y_and_only_with_it(ds):
    for shape in range(3):
        rows = [[shape, 3, 7, 20, py] for py in range(32)]
        xs, ys = np.array([centroid(im) for im in render(ds, rows)]).T
        assert np.all(np.diff(ys) > 0), f"shape {shape}: y centroid must increase with position y"
        assert np.ptp(xs) < 0.5, f"shape {shape}: x centroid moved by {np.ptp(xs):.2f} px"


def test_objects_sweep_most_of_the_canvas(ds):
    first, last = render(ds, [[0, 0, 0, 0, 0], [0, 0, 0, 31, 31]])
    (x0, y0), (x1, y1) = centroid(first), centroid(last)
    assert x0 < 16 and y0 < 16 and x1 > 47 and y1 > 47


def test_area_grows_with_scale(ds):
    for shape in range(3):
        area = render(ds, [[shape, s, 5, 16, 16] for s in range(6)]).sum(dim=(1, 2, 3))
        assert torch.all(area[1:] > area[:-1]), f"shape {shape}: area {area.tolist()}"


def test_rotation_changes_a_heart_but_orientation_0_and_2pi_are_identical(ds):
    heart = render(ds, [[2, 5, o, 16, 16] for o in (0, 10, 20)])
    assert not torch.equal(heart[0], heart[1]) and not torch.equal(heart[0], heart[2])
    for shape, scale, px, py in itertools.product(range(3), range(6), (0, 13, 31), (0, 22, 31)):
        first, last = render(ds, [[shape, scale, 0, px, py], [shape, scale, 39, px, py]])
        assert torch.equal(first, last), (shape, scale, px, py)


def test_the_three_shapes_differ(ds):
    sq, el, he = render(ds, [[s, 5, 3, 16, 16] for s in range(3)])
    assert not torch.equal(sq, el) and not torch.equal(sq, he) and not torch.equal(el, he)


def test_same_index_gives_the_same_image_alone_or_in_any_batch(ds):
    idx = torch.randint(0, len(ds), (3000,), generator=torch.Generator().manual_seed(2))
    batch = ds.images(idx)                       # several rendering chunks, shapes mixed
    again = ds.images(idx.flip(0)).flip(0)
    assert torch.equal(batch, again)
    for i in (0, 1234, 2999):
        assert torch.equal(ds.images([int(idx[i])])[0], batch[i])


def test_sample_factors_is_reproducible_and_covers_the_grid(ds):
    a = ds.sample_factors(5000, torch.Generator().manual_seed(3))
    b = ds.sample_factors(5000, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == torch.long and a.shape == (5000, 5)
    for k, size in enumerate(ds.factor_sizes):
        assert a[:, k].min() == 0 and a[:, k].max() == size - 1


def test_factor_values_follow_the_official_latents_values(ds):
    v = ds.factor_values([[2, 5, 39, 31, 0]])[0]
    assert v.tolist() == pytest.approx([3.0, 1.0, 2 * math.pi, 1.0, 0.0])


@pytest.mark.parametrize("bad, error", [
    ([[3, 0, 0, 0, 0]], ValueError),            # shape out of range
    ([[0, 0, 0, 0, -1]], ValueError),           # negative factor
    ([[0, 0, 0, 0]], ValueError),               # wrong number of factors
    ([[0.0, 1.0, 0.0, 0.0, 0.0]], TypeError),   # float "classes"
])
def test_bad_factors_raise_clear_errors(ds, bad, error):
    with pytest.raises(error, match="factor"):
        ds.images_from_factors(bad)


def test_bad_indices_raise_clear_errors_and_never_wrap(ds):
    with pytest.raises(IndexError, match="negative indices are not wrapped"):
        ds.images([-1])
    with pytest.raises(IndexError, match="out of range"):
        ds.factors([len(ds)])
    with pytest.raises(TypeError, match="integer"):
        ds.images(np.array([1.5]))


def test_cuda_rendering_matches_cpu(ds):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here; exercised on the GPU machine")
    f = ds.sample_factors(2048, torch.Generator().manual_seed(4))
    gpu = DSprites("cuda").images_from_factors(f.cuda())
    assert gpu.is_cuda
    assert (gpu.cpu() != ds.images_from_factors(f)).float().mean() < 1e-3


# -- the official file ---------------------------------------------------------------------

def write_official_layout(path, sizes=(3, 2, 4, 3, 5), seed=0):
    """A small .npz in the official layout: rows in order, colour column first, uint8 images."""
    grid = np.array(list(itertools.product(*[range(s) for s in sizes])), dtype=np.int64)
    classes = np.concatenate([np.zeros((len(grid), 1), np.int64), grid], axis=1)
    imgs = np.random.default_rng(seed).integers(0, 2, (len(grid), 64, 64), dtype=np.uint8)
    np.savez(path, imgs=imgs, latents_classes=classes,
             latents_values=classes.astype(np.float64))
    return imgs, grid


def test_official_file_layout_loads_with_the_same_protocol(tmp_path):
    path = tmp_path / DSPRITES_FILENAME
    imgs, grid = write_official_layout(path)
    ds = DSprites.from_npz(path)
    assert isinstance(ds, DSpritesFile)
    assert ds.factor_sizes == (3, 2, 4, 3, 5) and len(ds) == len(imgs)
    idx = torch.tensor([0, 7, len(imgs) - 1])
    assert torch.equal(ds.images(idx)[:, 0], torch.from_numpy(imgs[idx.numpy()]).float())
    assert torch.equal(ds.factors(idx), torch.from_numpy(grid[idx.numpy()]))
    f = ds.sample_factors(10, torch.Generator().manual_seed(0))
    assert torch.equal(ds.images_from_factors(f), ds.images(ds.index(f)))


def test_missing_official_file_names_the_file_and_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=DSPRITES_FILENAME) as err:
        DSprites.from_npz(tmp_path / "nope.npz")
    assert "dsprites-dataset" in str(err.value) and "DSprites()" in str(err.value)


def test_malformed_official_files_raise_clear_errors(tmp_path):
    wrong_keys = tmp_path / "a.npz"
    np.savez(wrong_keys, images=np.zeros((2, 64, 64), np.uint8))
    with pytest.raises(ValueError, match="lacks the arrays"):
        DSprites.from_npz(wrong_keys)

    shuffled = tmp_path / "b.npz"
    imgs, grid = write_official_layout(tmp_path / "c.npz")
    classes = np.concatenate([np.zeros((len(grid), 1), np.int64), grid[::-1]], axis=1)
    np.savez(shuffled, imgs=imgs, latents_classes=classes)
    with pytest.raises(ValueError, match="official order"):
        DSprites.from_npz(shuffled)

    pickled = tmp_path / "d.npz"
    np.savez(pickled, imgs=np.array([{"x": 1}], dtype=object), latents_classes=np.zeros((1, 6)))
    with pytest.raises(ValueError, match="could not read"):
        DSprites.from_npz(pickled)

    truncated = tmp_path / "e.npz"
    truncated.write_bytes(b"PK\x03\x04 not really a zip file")
    with pytest.raises(ValueError, match="could not read"):
        DSprites.from_npz(truncated)


# -- MNIST / CelebA / plain tensors ----------------------------------------------------------

def write_idx(path, array, magic_type=0x08):
    with open(path, "wb") as fh:
        fh.write(struct.pack(">I", (magic_type << 8) | array.ndim))
        fh.write(struct.pack(">" + "I" * array.ndim, *array.shape))
        fh.write(array.astype(np.uint8).tobytes())


def test_mnist_loads_from_raw_files_and_is_padded_to_64(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, (n,)))
    ds = load_mnist(tmp_path, train=True)
    assert len(ds) == 12
    x = ds.images([0, 11])
    assert x.shape == (2, 1, 64, 64) and set(x.unique().tolist()) <= {0.0, 1.0}
    assert x[:, :, :18].sum() == 0 and x[:, :, 46:].sum() == 0      # centred padding
    assert len(load_mnist(tmp_path, train=False)) == 5


def test_mnist_and_celeba_missing_offline_say_how_to_get_them(tmp_path):
    with pytest.raises(RuntimeError, match="download=True"):
        load_mnist(tmp_path / "empty")
    with pytest.raises(RuntimeError, match="CelebA"):
        load_celeba(tmp_path / "empty")


def test_tensor_images_validate_their_input():
    ds = TensorImages(torch.rand(5, 3, 64, 64))
    assert len(ds) == 5 and ds.images([4]).shape == (1, 3, 64, 64)
    with pytest.raises(TypeError, match="255"):
        TensorImages(torch.zeros(2, 1, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        TensorImages(torch.full((2, 1, 64, 64), 2.0))
    with pytest.raises(IndexError):
        ds.images([5])


def test_sample_images_are_the_sampled_images_without_the_checks():
    ds = DSprites()
    a = ds.sample(32, torch.Generator().manual_seed(5))[0]
    b = ds.sample_images(32, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    t = TensorImages(torch.rand(10, 1, 64, 64))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    idx = torch.randint(10, (7,), generator=g1)
    assert torch.equal(t.sample_images(7, g2), t.images(idx))
