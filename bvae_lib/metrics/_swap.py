"""Swap accuracy: does a part of the code carry its factor, and only it, from one image to another?

A metric only ground-truth data allows. For a code split into one part per factor (Dual-Swap
Disentangling's parts, or any model's best latent per factor from :func:`factor_alignment`),
take two images A and B that differ in factor k, put B's part k into A's code and decode. The
swap is right if the decoded image is the rendering of A's factors with factor k taken from B:
of the renderings of A's pose with every value of factor k, the one with B's value must be the
nearest (L2) to the decoded image. Renderings that are identical (a square turned by 90 degrees)
count as the same answer, so a decoder is never wrong for drawing a symmetric shape's
equivalent pose; ``chance`` -- what a decoder drawing A with a random value of factor k would
score -- says how much the symmetries give away.

Like every metric here it never imports a model: it takes the encoder (a representation) and a
decoder (codes -> images in [0, 1]), e.g. ``model.representation`` and
``lambda z: bvae_lib.viz.decode_images(model, z)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from .utils import check_ground_truth, check_int, encode, make_generator

__all__ = ["SwapResult", "swap_accuracy"]

Decoder = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SwapResult:
    """Result of :func:`swap_accuracy`; arrays are indexed like ``factors``."""
    accuracy: np.ndarray          # (F,) share of swaps decoded as the right rendering
    chance: np.ndarray            # (F,) the same for a decoder drawing a random value of factor k
    factors: tuple[str, ...]      # the factors that have a part
    num_pairs: int

    @property
    def mean(self) -> float:
        """The accuracy averaged over the factors."""
        return float(self.accuracy.mean())

    def table(self) -> str:
        """One line per factor: accuracy and chance."""
        return "\n".join(f"{name:12s} swap accuracy {a:.2f}  (chance {c:.2f})"
                         for name, a, c in zip(self.factors, self.accuracy, self.chance))


def _parts(dataset, parts, code_dim: int) -> dict[int, list[int]]:
    """{factor index: latent indices} from a mapping name -> indices."""
    if not isinstance(parts, Mapping) or not parts:
        raise ValueError(f"parts must map factor names to the latents that carry them, e.g. "
                         f"{{'position_x': [6, 7]}}; got {parts!r}")
    out = {}
    for name, latents in parts.items():
        if name not in dataset.factor_names:
            raise ValueError(f"parts names factor {name!r}, which is not one of the dataset's "
                             f"factors {dataset.factor_names}")
        idx = [int(j) for j in np.atleast_1d(np.asarray(latents))]
        if not idx or any(j < 0 or j >= code_dim for j in idx):
            raise ValueError(f"the part of {name!r} must be latent indices in [0, {code_dim - 1}]"
                             f" (the code has {code_dim} dimensions), got {latents!r}")
        out[dataset.factor_names.index(name)] = idx
    return out


def _distances(images: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
    return ((images - drawn) ** 2).flatten(1).sum(1)


def swap_accuracy(representation, decode: Decoder, dataset,
                  parts: Mapping[str, Sequence[int]], num_pairs: int = 500, seed: int = 0,
                  batch_size: int = 250) -> SwapResult:
    """Swap accuracy of a code whose part ``parts[name]`` (latent indices) carries factor
    ``name`` (see the module docstring).

    For each factor with a part: ``num_pairs`` pairs (A, B) drawn uniformly with B's value of
    the factor different from A's; A's and B's codes from ``representation``; A's code with the
    part's latents from B decoded by ``decode`` (codes (n, d) -> images (n, C, 64, 64) in
    [0, 1]); right if no rendering of A with another value of the factor is nearer than the one
    with B's. ``seed`` fixes the pairs."""
    check_ground_truth(dataset)
    num_pairs = check_int(num_pairs, "num_pairs")
    batch_size = check_int(batch_size, "batch_size")
    gen = make_generator(seed)
    probe = encode(representation, dataset.images_from_factors(dataset.sample_factors(1, gen)))
    factor_parts = _parts(dataset, parts, probe.shape[1])
    names, accuracy, chance = [], [], []
    for k, latents in factor_parts.items():
        size = dataset.factor_sizes[k]
        if size < 2:
            raise ValueError(f"factor {dataset.factor_names[k]!r} takes one value: there is "
                             f"nothing to swap")
        right = equal = 0.0
        for start in range(0, num_pairs, batch_size):
            n = min(batch_size, num_pairs - start)
            fa, fb = dataset.sample_factors(n, gen).cpu(), dataset.sample_factors(n, gen).cpu()
            # B's value of factor k: any value but A's
            shift = torch.randint(1, size, (n,), generator=gen)
            fb[:, k] = (fa[:, k] + shift) % size
            za, zb = (torch.as_tensor(encode(representation, dataset.images_from_factors(
                f.to(dataset.device))), dtype=torch.float32) for f in (fa, fb))
            za[:, latents] = zb[:, latents]
            with torch.no_grad():
                decoded = torch.as_tensor(decode(za)).float().cpu()
            if decoded.shape[0] != n or decoded.ndim != 4:
                raise ValueError(f"decode must return images (n, C, 64, 64) for n codes; for "
                                 f"{n} codes it returned shape {tuple(decoded.shape)}")
            target = fa.clone()
            target[:, k] = fb[:, k]
            target_img = dataset.images_from_factors(target.to(dataset.device)).cpu()
            d_target = _distances(decoded, target_img)
            nearest = d_target.clone()
            for value in range(size):
                g = fa.clone()
                g[:, k] = value
                drawn = dataset.images_from_factors(g.to(dataset.device)).cpu()
                nearest = torch.minimum(nearest, _distances(decoded, drawn))
                equal += float((drawn == target_img).flatten(1).all(1).sum()) / size
            right += float((d_target <= nearest).sum())
        names.append(dataset.factor_names[k])
        accuracy.append(right / num_pairs)
        chance.append(equal / num_pairs)
    return SwapResult(np.array(accuracy), np.array(chance), tuple(names), num_pairs)
