"""How fast does the procedural dSprites render? Prints images/s on this machine.

    .venv/bin/python benchmarks/bench_data.py [--device cuda]

Target (issue 2): >= 20,000 images/s on the 2-core CI CPU.
"""

import argparse
import time

import torch

from bvae_lib.data import DSprites


def images_per_second(ds, batch, seconds=2.0):
    g = torch.Generator(device=ds.device).manual_seed(0)
    f = ds.sample_factors(batch, g)
    ds.images_from_factors(f)                       # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        ds.images_from_factors(f)
        n += batch
    if ds.device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    ds = DSprites(args.device)
    # Both thread counts: on a CPU that is also running something else, two OpenMP threads
    # wait for each other and can be far slower than one.
    for threads in sorted({1, torch.get_num_threads()}):
        torch.set_num_threads(threads)
        print(f"device {args.device}, torch threads {threads}")
        for batch in (64, 256, 1024, 4096):
            print(f"  batch {batch:5d}: {images_per_second(ds, batch):10,.0f} images/s")


if __name__ == "__main__":
    main()
