"""``pytest --nbval book/``: the chapters' kernels start in the environment that
``python -m bvae_lib.book execute`` gives them (:func:`bvae_lib.book.kernel_env`: glibc's malloc
keeps freed training buffers, and idle OpenMP threads sleep instead of spinning when fewer cores
are free than a chapter uses). nbval starts each kernel as a child of this process, so setting
the variables here, at collection time, is enough. A value the user set already is kept."""

import os

from bvae_lib.book import kernel_env

for _name, _value in kernel_env().items():
    os.environ.setdefault(_name, _value)
