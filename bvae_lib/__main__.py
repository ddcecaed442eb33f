"""``python -m bvae_lib train|evaluate|traverse``: see :mod:`bvae_lib.cli`."""

import sys

from bvae_lib.cli import main

if __name__ == "__main__":
    sys.exit(main())
