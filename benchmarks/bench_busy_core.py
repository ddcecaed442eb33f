"""What another process on one of the cores costs a chapter, with and without passive OpenMP waits.

A chapter computes with ``bvae_lib.book.BOOK_THREADS`` (2) threads. By default OpenMP's idle
threads spin, waiting for the next parallel region; when another process holds one of the two
cores, the spinning thread and the busy neighbour share it, and every parallel region waits for
whichever of its threads was preempted. ``OMP_WAIT_POLICY=PASSIVE`` makes idle threads sleep,
which ``bvae_lib.book.kernel_env`` chooses when fewer cores are idle than a chapter uses; ``GOMP_SPINCOUNT`` bounds the spinning before a thread sleeps. This
script times the same chapter-like workload -- a short training run of the Burgess network, batch
32, at the chapters' thread count, in the chapters' kernel environment otherwise -- in a fresh
process for each of six cases, side by side in one run: spinning (OpenMP's default), a short
spin then sleep, and passive waits, each on an idle machine and with one core held by a
busy-looping process. It prints images per second, and each case's time relative to the idle
default. Rounds alternate the cases so that a change of load during the run biases none of them.

    python benchmarks/bench_busy_core.py               # 2 rounds of 100 steps
    python benchmarks/bench_busy_core.py --rounds 3 --spin 5000
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from bvae_lib.book import MALLOC_ENV

WORKLOAD = r"""
import os, sys, time
import torch
from bvae_lib.book import BOOK_THREADS
from bvae_lib.data import DSprites
from bvae_lib.models import ModelConfig
from bvae_lib.objectives import BetaVAEConfig
from bvae_lib.train import TrainConfig, train
torch.set_num_threads(BOOK_THREADS)
steps = int(sys.argv[1])
ds = DSprites()
cfg = TrainConfig(steps=steps, batch_size=32, lr=1e-3, seed=0, device="cpu", progress=False,
                  log_every=steps)
train(ModelConfig(), BetaVAEConfig(beta=4), ds, TrainConfig(**{**cfg.__dict__, "steps": 2}))
t = time.perf_counter()
train(ModelConfig(), BetaVAEConfig(beta=4), ds, cfg)
print(time.perf_counter() - t)
"""

BUSY_LOOP = "while True:\n    pass\n"


#: The OpenMP wait policies compared: environment variables of the workload's process.
POLICIES = {
    "spinning waits (OpenMP default)": {},
    "short spin, then sleep": {"GOMP_SPINCOUNT": "{spin}"},
    "passive waits": {"OMP_WAIT_POLICY": "PASSIVE"},
}


def run_case(steps: int, policy: dict, busy: bool) -> float:
    """Seconds of ``steps`` training steps in a fresh process (model set-up excluded), in the
    chapters' kernel environment with only the OpenMP wait policy changed."""
    env = dict(os.environ, **MALLOC_ENV)
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        env.pop(name, None)
    env.update(policy)
    hog = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if busy else None
    try:
        out = subprocess.run([sys.executable, "-c", WORKLOAD, str(steps)], env=env,
                             capture_output=True, text=True, check=True, timeout=3600)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="training steps a case (default 100)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the six cases (default 2)")
    parser.add_argument("--spin", type=int, default=20000,
                        help="GOMP_SPINCOUNT of the short-spin policy (default 20000)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.rounds < 1:
        parser.error("--steps and --rounds must be positive integers")

    cases = [(f"{'one core busy' if busy else 'idle'}, {name}",
              {k: v.format(spin=args.spin) for k, v in policy.items()}, busy)
             for busy in (False, True) for name, policy in POLICIES.items()]
    times = {name: [] for name, _, _ in cases}
    print(f"{os.cpu_count()} cores; {args.rounds} rounds of {args.steps} steps of batch 32 a case; "
          f"short spin = GOMP_SPINCOUNT={args.spin}", flush=True)
    for r in range(args.rounds):
        for name, policy, busy in cases:
            t0 = time.perf_counter()
            times[name].append(run_case(args.steps, policy, busy))
            print(f"  round {r + 1}: {name:45s} {times[name][-1]:7.1f} s "
                  f"(process {time.perf_counter() - t0:.0f} s)", flush=True)
    base = statistics.median(times[cases[0][0]])
    print(f"\n{'case':45s} {'images/s':>9s} {'time / idle default':>20s}   (medians)")
    for name, _, _ in cases:
        t = statistics.median(times[name])
        print(f"{name:45s} {args.steps * 32 / t:9.0f} {t / base:20.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
