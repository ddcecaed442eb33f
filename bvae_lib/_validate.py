"""The one type test the argument checks of every module share (the package's lowest layer:
it imports nothing from bvae_lib)."""

from __future__ import annotations

import numpy as np

__all__ = ["is_int"]


def is_int(value) -> bool:
    """An integer -- Python's or numpy's -- and not a bool (``True`` is an ``int`` in Python, so
    ``steps=True`` would otherwise pass as 1)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
