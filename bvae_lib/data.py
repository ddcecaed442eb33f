"""Ground-truth data: datasets whose generative factors are known.

Everything that scores or trains on dSprites talks to a dataset through one small protocol
(the public contract the book, the metrics and the training loop rely on):

==========================  ==================================================================
``factor_names``            names of the K factors, e.g. ``("shape", "scale", ...)``
``factor_sizes``            number of classes of each factor, e.g. ``(3, 6, 40, 32, 32)``
``len(dataset)``            number of images, ``prod(factor_sizes)``
``images(indices)``         float32 ``(n, 1, 64, 64)``, values in {0, 1}
``factors(indices)``        factor classes, long ``(n, K)``
``sample_factors(n, g)``    n factor combinations drawn uniformly (``g``: a torch.Generator)
``index(factors)``          the flat index of each factor combination
``images_from_factors(f)``  the images of the given factor combinations
``sample_images(n, g)``     optional: ``sample(n, g)[0]`` without re-checking what was drawn
==========================  ==================================================================

Indexing follows the official dSprites file exactly: factors in the order shape, scale,
orientation, position x, position y, the last one varying fastest, so that
``index = sum_k factor_k * prod_{j>k} size_j``. Code written for the official file works on the
replica and vice versa.

Two dSprites sources implement the protocol:

* :class:`DSprites` -- a procedural replica that renders any image on demand, on any device, with
  no download (the default everywhere in this project);
* :meth:`DSprites.from_npz` -- the official ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``.

MNIST and CelebA (no ground-truth factors, for training only) come through torchvision:
:func:`load_mnist`, :func:`load_celeba`; any image tensor can be wrapped in :class:`TensorImages`.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np
import torch

from ._validate import is_int

__all__ = [
    "GroundTruthDataset",
    "DSprites",
    "DSpritesFile",
    "TensorImages",
    "load_mnist",
    "load_celeba",
    "DSPRITES_FILENAME",
    "DSPRITES_URL",
]

DSPRITES_FILENAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
DSPRITES_URL = "https://github.com/google-deepmind/dsprites-dataset"


def _as_index_tensor(values, name: str, device) -> torch.Tensor:
    """Integers (scalar, list, numpy or torch) -> long tensor, refusing floats and booleans.

    A float array of "indices" is nearly always a bug upstream (a mean, a normalised value), so
    we refuse it rather than truncate it silently.
    """
    if isinstance(values, torch.Tensor):
        t = values
    else:
        arr = np.asarray(values)
        if arr.dtype == object:
            raise TypeError(f"{name} must be integers, got an object array: {values!r:.80}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name} must be an integer array or tensor, got dtype {t.dtype}; "
                        f"convert class indices with .long() (or np.int64) first")
    return t.to(device=device, dtype=torch.long)


class GroundTruthDataset:
    """A finite dataset whose images are indexed by a grid of discrete factors.

    Subclasses set ``factor_names``/``factor_sizes`` and implement :meth:`images_from_factors`;
    indexing, validation and sampling are shared here so every source behaves identically.
    """

    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()
    device: torch.device = torch.device("cpu")

    # -- shape of the grid -------------------------------------------------------------------
    @property
    def num_factors(self) -> int:
        """K, the number of factors."""
        return len(self.factor_sizes)

    def __len__(self) -> int:
        return math.prod(self.factor_sizes)

    @property
    def _strides(self) -> torch.Tensor:
        # stride_k = prod_{j>k} size_j: the last factor (position y for dSprites) varies fastest.
        strides = [math.prod(self.factor_sizes[k + 1:]) for k in range(self.num_factors)]
        return torch.tensor(strides, dtype=torch.long, device=self.device)

    # -- validation ---------------------------------------------------------------------------
    def _check_factors(self, factors) -> torch.Tensor:
        f = _as_index_tensor(factors, "factors", self.device)
        if f.dim() == 1 and f.numel() == self.num_factors:
            f = f.unsqueeze(0)
        if f.dim() != 2 or f.shape[1] != self.num_factors:
            raise ValueError(
                f"factors must have shape (n, {self.num_factors}) with columns "
                f"{self.factor_names}; got shape {tuple(f.shape)}")
        sizes = torch.tensor(self.factor_sizes, device=self.device)
        bad = (f < 0) | (f >= sizes)
        if bad.any():
            row, col = (int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"factor '{self.factor_names[col]}' must be in [0, {self.factor_sizes[col] - 1}], "
                f"got {int(f[row, col])} (row {row}); factor values are class indices, not values")
        return f

    def _check_indices(self, indices) -> torch.Tensor:
        idx = _as_index_tensor(indices, "indices", self.device).reshape(-1)
        n = len(self)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
            bad = int(idx[(idx < 0) | (idx >= n)][0])
            raise IndexError(f"index {bad} is out of range for a dataset of {n} images "
                             f"(valid: 0 .. {n - 1}; negative indices are not wrapped)")
        return idx

    # -- the protocol -------------------------------------------------------------------------
    def index(self, factors) -> torch.Tensor:
        """Flat index of each factor combination, ``sum_k f_k * prod_{j>k} size_j``."""
        f = self._check_factors(factors)
        return (f * self._strides).sum(dim=1)

    def factors(self, indices) -> torch.Tensor:
        """Factor classes ``(n, K)`` of the images at ``indices`` (inverse of :meth:`index`)."""
        idx = self._check_indices(indices)
        sizes = torch.tensor(self.factor_sizes, dtype=torch.long, device=self.device)
        return (idx.unsqueeze(1) // self._strides) % sizes

    def sample_factors(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` factor combinations uniformly from the grid, ``(n, K)`` long.

        With a ``generator`` the draw is reproducible; it is made on the generator's device and
        returned on the dataset's.
        """
        if not is_int(n) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        # each column is drawn, then all are stacked: 2 K int64 numbers per combination
        _check_fits(int(n), 2 * self.num_factors * 8, "factor combinations", self.device)
        gen_device = generator.device if generator is not None else self.device
        cols = [torch.randint(0, s, (int(n),), generator=generator, device=gen_device)
                for s in self.factor_sizes]
        return torch.stack(cols, dim=1).to(self.device)

    def images(self, indices) -> torch.Tensor:
        """Images at the flat ``indices``: float32 ``(n, 1, 64, 64)`` in {0, 1}."""
        idx = self._check_indices(indices)
        return self._images_at(idx)

    def _images_at(self, idx: torch.Tensor) -> torch.Tensor:
        return self.images_from_factors(self.factors(idx))

    def images_from_factors(self, factors) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None):
        """``(images, factors)`` for ``n`` uniformly drawn factor combinations."""
        f = self.sample_factors(n, generator)
        return self.images_from_factors(f), f

    def sample_images(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``sample(n, generator)[0]``: the same random numbers, the same images. The factors
        were just drawn in range, so they are not checked again: no value is read back from the
        device, and a GPU is never waited for (the training loop draws its batches here)."""
        return self._render_drawn(self.sample_factors(n, generator))

    def _render_drawn(self, factors: torch.Tensor) -> torch.Tensor:
        """The images of factor rows known to be in range (subclasses may skip the checks)."""
        return self.images_from_factors(factors)

    def __repr__(self) -> str:
        grid = ", ".join(f"{a}={b}" for a, b in zip(self.factor_names, self.factor_sizes))
        return f"{type(self).__name__}({grid}; {len(self)} images on {self.device})"


def _memory_bytes(device: torch.device) -> int | None:
    """Total memory of ``device`` in bytes, or None where it cannot be told."""
    return _memory_of(device.type, device.index)


@functools.lru_cache(maxsize=None)        # asked on every batch the training loop draws
def _memory_of(kind: str, index: int | None) -> int | None:
    device = torch.device(kind, index) if index is not None else torch.device(kind)
    try:
        if device.type == "cuda":
            return torch.cuda.get_device_properties(device).total_memory
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")   # the host's RAM
    except (AttributeError, ValueError, OSError, RuntimeError):
        return None


def _check_fits(n: int, bytes_each: int, what: str, device) -> None:
    """Refuse a request larger than the device's whole memory before the allocator sees it:
    its error names neither the argument nor the way out."""
    device = torch.device(device)
    total = _memory_bytes(device)
    if total is not None and n * bytes_each > total:
        raise ValueError(f"{n:,} {what} would need {n * bytes_each / 2**30:,.1f} GiB, more than "
                         f"the {total / 2**30:,.1f} GiB of memory of {device}; ask for at most "
                         f"{total // bytes_each:,} at once (draw and use them in chunks)")


# ---------------------------------------------------------------------------------------------
# The procedural replica
# ---------------------------------------------------------------------------------------------

#: Geometry of the replica, in pixels of the 64 x 64 canvas (pixel centres at 0 .. 63).
#: The official generator is not published; these numbers were chosen by eye so that objects
#: look like the official images: the object centre sweeps most of the canvas and the largest
#: objects stay (almost) inside it at the extreme positions.
POSITION_RANGE = (12.0, 51.0)   # centre in pixels for position 0 and position 1
RADIUS_AT_SCALE_1 = 12.0        # farthest point of a shape from its centre, at scale 1


class DSprites(GroundTruthDataset):
    """Procedural replica of dSprites (Matthey et al. 2017), rendered on demand.

    Same factor grid and indexing as the official file:

    ============== ===== =================================================
    shape           3    square, ellipse, heart
    scale           6    ``linspace(0.5, 1, 6)``
    orientation    40    ``linspace(0, 2*pi, 40)`` (0 and 2*pi both present)
    position_x     32    ``linspace(0, 1, 32)``
    position_y     32    ``linspace(0, 1, 32)``
    ============== ===== =================================================

    737,280 binary images of 64 x 64 pixels. A pixel is on when its centre lies inside the shape
    (no anti-aliasing, like the official binary images).

    How it differs from the official file (it is a replica, not a copy):

    * the shapes are drawn from formulas -- a square, a 2:1 ellipse and the implicit heart
      ``(x^2 + y^2 - 1)^3 - x^2 y^3 <= 0`` -- not from DeepMind's sprite bitmaps, so individual
      pixels differ;
    * object size and the range of positions are our best estimate of the original geometry
      (centre from pixel 12 to 51 along each axis, largest radius 12 px at scale 1); position x
      moves the object to the right (column), position y moves it down (row);
    * orientation rotates every shape about its own centre; as in the original, the square and
      the ellipse are symmetric, so several orientations give the same image.

    Rendering is vectorised and runs wherever the dataset lives: ``DSprites(device="cuda")``
    renders batches on the GPU, so training data never crosses the bus.
    """

    factor_names = ("shape", "scale", "orientation", "position_x", "position_y")
    factor_sizes = (3, 6, 40, 32, 32)

    # Half-width of the window rendered around each object: every pixel farther than this from
    # the centre is background, so we only evaluate the shape on a (2W+2) x (2W+2) patch.
    _WINDOW = int(math.ceil(RADIUS_AT_SCALE_1)) + 1

    def __init__(self, device: str | torch.device | None = None):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        d = self.device
        self.scales = torch.linspace(0.5, 1.0, 6, dtype=torch.float64)
        self.orientations = torch.linspace(0.0, 2 * math.pi, 40, dtype=torch.float64)
        self.positions = torch.linspace(0.0, 1.0, 32, dtype=torch.float64)
        # cos/sin tables in float64, reduced mod 2*pi so that orientation 0 and 2*pi give
        # bitwise identical images (as they do in the official file).
        theta = torch.remainder(self.orientations, 2 * math.pi)
        self._cos = torch.cos(theta).float().to(d)
        self._sin = torch.sin(theta).float().to(d)
        lo, hi = POSITION_RANGE
        self._centre = (lo + self.positions * (hi - lo)).float().to(d)
        self._radius = (RADIUS_AT_SCALE_1 * self.scales).float().to(d)
        self._offsets = torch.arange(-self._WINDOW, self._WINDOW + 2, device=d)

    def to(self, device) -> "DSprites":
        """The same dataset rendering on ``device``."""
        return DSprites(device)

    @classmethod
    def from_npz(cls, path: str | os.PathLike) -> "DSpritesFile":
        """Load the official dSprites file (see :class:`DSpritesFile`)."""
        return DSpritesFile(path)

    def factor_values(self, factors) -> torch.Tensor:
        """Continuous values of the factors, float64 ``(n, 5)``, as in ``latents_values``:
        shape 1..3, scale in [0.5, 1], orientation in [0, 2*pi], positions in [0, 1]."""
        f = self._check_factors(factors).cpu()
        return torch.stack([f[:, 0].double() + 1, self.scales[f[:, 1]],
                            self.orientations[f[:, 2]], self.positions[f[:, 3]],
                            self.positions[f[:, 4]]], dim=1)

    # Rendering works on chunks of this many images: beyond it, the (n, w, w) temporaries fall
    # out of the CPU caches and throughput drops threefold.
    _CHUNK = 1024

    def images_from_factors(self, factors) -> torch.Tensor:
        return self._render_drawn(self._check_factors(factors))

    def _render_drawn(self, f: torch.Tensor) -> torch.Tensor:
        n, size = f.shape[0], 64
        _check_fits(n, size * size * 4, "images", self.device)
        out = torch.zeros(n, size * size, device=self.device)
        for start in range(0, n, self._CHUNK):
            self._render(f[start:start + self._CHUNK], out[start:start + self._CHUNK])
        return out.view(n, 1, size, size)

    def _render(self, f: torch.Tensor, out: torch.Tensor) -> None:
        """Render the factor rows ``f`` (n, 5) into ``out`` (n, 64*64), which must be zero."""
        n, size = f.shape[0], 64
        shape, scale, orient, px, py = f.unbind(1)
        cx, cy = self._centre[px], self._centre[py]
        inv_r = 1.0 / self._radius[scale]
        cos, sin = self._cos[orient] * inv_r, self._sin[orient] * inv_r

        # Pixel centres of a window around each object: x along columns, y along rows.
        cols = torch.floor(cx).long()[:, None] + self._offsets      # (n, w)
        rows = torch.floor(cy).long()[:, None] + self._offsets      # (n, w)
        dx = cols.float() - cx[:, None]
        dy = rows.float() - cy[:, None]
        # The inverse rotation is linear and separable: u = dx cos + dy sin, v = dy cos - dx sin,
        # so we form the four (n, w) products and only their sums are (n, w, w).
        ux, uy = dx * cos[:, None], dy * sin[:, None]
        vx, vy = -dx * sin[:, None], dy * cos[:, None]

        # Each shape's formula runs on its own images (grouped by a stable sort on shape).
        perm = torch.argsort(shape, stable=True)
        counts = torch.bincount(shape, minlength=3).tolist()
        inside = torch.empty(n, ux.shape[1], ux.shape[1], device=self.device)
        start = 0
        for s, count in enumerate(counts):
            if count:
                sel = perm[start:start + count]
                u = ux[sel, None, :] + uy[sel, :, None]
                v = vx[sel, None, :] + vy[sel, :, None]
                inside[sel] = _SHAPE_TESTS[s](u, v).float()
                start += count

        # Paste each window into the canvas. Window pixels that fall outside the canvas are sent
        # to pixel 0 with value 0; scatter_add keeps the (unique) in-canvas pixels exact.
        valid = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
        flat = rows[:, :, None] * size + cols[:, None, :]
        flat = torch.where(valid, flat, torch.zeros_like(flat)).reshape(n, -1)
        out.scatter_add_(1, flat, (inside * valid).reshape(n, -1))


# Shapes in object units: the farthest point of each from its centre is at distance ~1.
def _square(u, v):
    half = 1 / math.sqrt(2)          # half-diagonal 1
    return torch.maximum(u.abs(), v.abs()) <= half


def _ellipse(u, v):
    return u * u + (2 * v) * (2 * v) <= 1.0   # semi-axes 1 and 1/2


def _heart(u, v):
    # Implicit heart (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0 with y pointing up; it spans
    # x in [-1.14, 1.14], y in [-1, 1.24]. We centre it on its bounding box (y + 0.118) and
    # shrink by 1.24 so that its farthest point is ~1 from the centre, like the other shapes.
    k = 1.24
    x = k * u
    y = 0.118 - k * v               # image rows grow downwards; the heart's point is at the bottom
    r = x * x + y * y - 1
    return r * r * r - x * x * y * y * y <= 0


# ---------------------------------------------------------------------------------------------
# The official file
# ---------------------------------------------------------------------------------------------

class DSpritesFile(GroundTruthDataset):
    """The official dSprites file, exposing the same protocol as :class:`DSprites`.

    The file is ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` (26 MB), published at
    https://github.com/google-deepmind/dsprites-dataset. It is read with ``allow_pickle=False``
    (its pickled ``metadata`` entry is never touched). The colour factor, which has one value, is
    dropped; the factor sizes are read from ``latents_classes`` and the rows must be in the
    official order (checked on load), so a smaller file in the same layout also loads -- that is
    how the tests exercise this code.

    Images are kept bit-packed in memory (8 pixels a byte: 370 MB for the full file instead of
    2.9 GB).
    """

    factor_names = DSprites.factor_names

    def __init__(self, path: str | os.PathLike, device: str | torch.device | None = None):
        path = Path(path)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        if not path.is_file():
            raise FileNotFoundError(
                f"dSprites file not found: {path}. Expected the official "
                f"'{DSPRITES_FILENAME}' (26 MB) from {DSPRITES_URL}; download it there and "
                f"pass its path, or use the procedural replica bvae_lib.data.DSprites(), which "
                f"needs no file.")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in ("imgs", "latents_classes") if k in data.files}
                found = sorted(data.files)
        except Exception as e:  # zip errors, truncated files, pickled (object) arrays
            raise ValueError(f"could not read {path} as the dSprites .npz file ({e}). Expected "
                             f"'{DSPRITES_FILENAME}' from {DSPRITES_URL}; re-download it.") from e
        missing = {"imgs", "latents_classes"} - set(arrays)
        if missing:
            raise ValueError(f"{path} is not a dSprites file: it lacks the arrays "
                             f"{sorted(missing)} (found {found}). Expected "
                             f"'{DSPRITES_FILENAME}' from {DSPRITES_URL}.")
        imgs, classes = arrays["imgs"], arrays["latents_classes"]
        if imgs.ndim != 3 or imgs.shape[1:] != (64, 64):
            raise ValueError(f"{path}: 'imgs' must have shape (N, 64, 64), got {imgs.shape}")
        if classes.ndim != 2 or classes.shape != (imgs.shape[0], 6):
            raise ValueError(f"{path}: 'latents_classes' must have shape ({imgs.shape[0]}, 6) "
                             f"(colour, shape, scale, orientation, x, y), got {classes.shape}")
        classes = classes[:, 1:].astype(np.int64)           # drop colour, which is constant
        self.factor_sizes = tuple(int(c) + 1 for c in classes.max(axis=0))
        if math.prod(self.factor_sizes) != imgs.shape[0]:
            raise ValueError(f"{path}: {imgs.shape[0]} images do not fill the factor grid "
                             f"{self.factor_sizes}; the file is incomplete")
        strides = np.array([math.prod(self.factor_sizes[k + 1:]) for k in range(5)])
        if not np.array_equal(classes @ strides, np.arange(imgs.shape[0])):
            raise ValueError(f"{path}: rows are not in the official order (position y fastest)")
        _check_binary(imgs, path)
        self._packed = torch.from_numpy(np.packbits(imgs.astype(np.uint8), axis=-1))  # (N,64,8)
        self.path = path

    def _images_at(self, idx: torch.Tensor) -> torch.Tensor:
        packed = self._packed[idx.cpu()].numpy()
        bits = np.unpackbits(packed, axis=-1)
        return torch.from_numpy(bits).float().unsqueeze(1).to(self.device)

    def images_from_factors(self, factors) -> torch.Tensor:
        return self._images_at(self.index(factors))


def _check_binary(imgs: np.ndarray, path) -> None:
    """Every pixel 0 or 1, as in the official file: ``np.packbits`` keeps only "non-zero", and
    a cast to uint8 first would turn grey levels in (0, 1) into 0 -- a file of grey images
    would load as blank ones."""
    if imgs.dtype == np.bool_:
        return
    if np.issubdtype(imgs.dtype, np.integer):
        # the official file (uint8): two passes over it, no temporary arrays
        if imgs.max(initial=0) <= 1 and (np.issubdtype(imgs.dtype, np.unsignedinteger)
                                         or imgs.min(initial=0) >= 0):
            return
    for start in range(0, imgs.shape[0], 8192):        # bounded temporaries on 737,280 images
        chunk = imgs[start:start + 8192]
        bad = (chunk != 0) & (chunk != 1)
        if bad.any():
            i, r, c = (int(v) for v in np.argwhere(bad)[0])
            raise ValueError(f"{path}: 'imgs' must be binary (0/1) like the official file, "
                             f"found {chunk[i, r, c]!r} (image {start + i}, pixel ({r}, {c})); "
                             f"binarise the images first (e.g. imgs > 0.5), or load grey "
                             f"images with bvae_lib.data.TensorImages")


# ---------------------------------------------------------------------------------------------
# Plain image tensors (MNIST, CelebA, anything)
# ---------------------------------------------------------------------------------------------

class TensorImages:
    """Images held in one tensor ``(N, C, 64, 64)`` with values in [0, 1], no factors.

    The training loop moves it to the device once and indexes batches there.
    """

    def __init__(self, images: torch.Tensor, name: str = "images"):
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise ValueError(f"images must be a tensor (N, C, H, W), got "
                             f"{getattr(images, 'shape', type(images))}")
        if not images.is_floating_point():
            raise TypeError(f"images must be float with values in [0, 1], got {images.dtype}; "
                            f"divide uint8 images by 255")
        if images.numel() and not bool(torch.isfinite(images).all()):
            where = int((~torch.isfinite(images)).reshape(images.shape[0], -1).any(1)
                        .nonzero()[0])
            raise ValueError(f"images contain NaN or infinite values (first in image {where}); "
                             f"images must have values in [0, 1]: clean or drop those images")
        if images.numel() and (images.min() < 0 or images.max() > 1):
            raise ValueError(f"images must have values in [0, 1], got values in "
                             f"[{float(images.min()):.3g}, {float(images.max()):.3g}]; divide "
                             f"uint8 images by 255, or rescale them")
        self._images = images
        self.name = name

    @property
    def device(self) -> torch.device:
        return self._images.device

    def to(self, device) -> "TensorImages":
        return TensorImages(self._images.to(device), self.name)

    def __len__(self) -> int:
        return self._images.shape[0]

    def images(self, indices) -> torch.Tensor:
        idx = _as_index_tensor(indices, "indices", self.device).reshape(-1)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise IndexError(f"indices must be in [0, {len(self) - 1}]")
        return self._images[idx]

    def sample_images(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images drawn uniformly with replacement (indices from ``generator``, on its
        device), without reading the indices back to check them: they are drawn in range."""
        device = generator.device if generator is not None else self.device
        idx = torch.randint(len(self), (int(n),), generator=generator, device=device)
        return self._images[idx.to(self.device)]

    def __repr__(self) -> str:
        return f"TensorImages({self.name}: {tuple(self._images.shape)} on {self.device})"


def _check_limit(limit) -> None:
    # 0 would read as "no limit" and a negative one would slice off the end: refuse both.
    if limit is not None and (not is_int(limit)
                              or limit < 1):
        raise ValueError(f"limit must be None (every image) or a positive number of images, "
                         f"got {limit!r}")


def _offline_error(name: str, root, how: str, err: Exception) -> RuntimeError:
    return RuntimeError(f"{name} is not available under '{root}' and could not be downloaded "
                        f"({type(err).__name__}: {err}). {how}")


def load_mnist(root: str | os.PathLike = "data", train: bool = True,
               download: bool = False, limit: int | None = None) -> TensorImages:
    """MNIST through torchvision, padded to 64 x 64 and binarised at 0.5 (for Bernoulli decoders).

    ``download=True`` fetches it (needs the internet, e.g. in Colab); otherwise the raw files
    must already be in ``root/MNIST/raw``.
    """
    from torchvision.datasets import MNIST

    _check_limit(limit)
    try:
        ds = MNIST(str(root), train=train, download=download)
    except Exception as e:  # RuntimeError "Dataset not found", URLError when offline
        raise _offline_error(
            "MNIST", root, "Call load_mnist(root, download=True) with internet access, or put "
            "the four files 'train-images-idx3-ubyte' etc. in ROOT/MNIST/raw.", e) from e
    x = ds.data[:limit] if limit is not None else ds.data
    x = (x.float() / 255.0 > 0.5).float().unsqueeze(1)                 # (n, 1, 28, 28)
    x = torch.nn.functional.pad(x, (18, 18, 18, 18))                 # centred on 64 x 64
    return TensorImages(x, name="MNIST " + ("train" if train else "test"))


def load_celeba(root: str | os.PathLike = "data", split: str = "train",
                download: bool = False, limit: int | None = None) -> TensorImages:
    """CelebA through torchvision, centre-cropped to 148 and resized to 64 x 64 RGB.

    torchvision verifies the official files by checksum, so only the genuine files load; they
    are large (1.4 GB) and hosted on Google Drive, which often refuses automatic downloads:
    download them by hand into ``root/celeba`` if ``download=True`` fails.
    """
    from torchvision import transforms
    from torchvision.datasets import CelebA

    _check_limit(limit)
    tf = transforms.Compose([transforms.CenterCrop(148), transforms.Resize(64),
                             transforms.ToTensor()])
    try:
        ds = CelebA(str(root), split=split, download=download, transform=tf)
    except Exception as e:
        raise _offline_error(
            "CelebA", root, "Download 'img_align_celeba.zip' and the attribute/partition text "
            "files from the CelebA website into ROOT/celeba, or retry with download=True.",
            e) from e
    n = len(ds) if limit is None else min(limit, len(ds))
    x = torch.stack([ds[i][0] for i in range(n)])
    return TensorImages(x, name=f"CelebA {split}")


_SHAPE_TESTS = (_square, _ellipse, _heart)   # in the order of the shape factor
