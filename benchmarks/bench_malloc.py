"""What glibc's malloc settings cost the metrics: a shipped model scored with the β-VAE metric
in a fresh process with glibc's defaults and with ``bvae_lib._memory``'s settings (a 64 MB mmap
threshold, 1 GB trim threshold), side by side, one torch thread each.

The metrics encode batches of 256 images; the Burgess encoder's first activation on such a
batch is 33.5 MB, just above glibc's default mmap threshold, so by default every batch maps
fresh pages and faults them in. The script prints wall, user and system seconds and the minor
page faults of each case (medians over rounds that alternate the cases, so that a change of
load biases neither), and checks that both give the same score.

    python benchmarks/bench_malloc.py                      # beta4, 2 rounds
    python benchmarks/bench_malloc.py --model beta1 --rounds 3 --points 300
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from bvae_lib._memory import MALLOC_ENV

WORKLOAD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from bvae_lib import zoo
from bvae_lib.data import DSprites
from bvae_lib.metrics import beta_vae_score
model, ds, points = zoo.load(sys.argv[1]), DSprites(), int(sys.argv[2])
before = resource.getrusage(resource.RUSAGE_SELF)
t = time.perf_counter()
score = beta_vae_score(model.representation, ds, num_train=points, num_eval=points // 2, seed=0).score
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": time.perf_counter() - t, "user": after.ru_utime - before.ru_utime,
                  "sys": after.ru_stime - before.ru_stime,
                  "minflt": after.ru_minflt - before.ru_minflt, "score": float(score)}))
"""

CASES = {"glibc's defaults": {}, "bvae_lib._memory settings": MALLOC_ENV}


def run_case(model: str, points: int, settings: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(settings, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", WORKLOAD, model, str(points)], env=env,
                         capture_output=True, text=True, check=True, timeout=3600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="beta4", help="a shipped model (default beta4)")
    parser.add_argument("--points", type=int, default=150,
                        help="training points of the metric (default 150; the zoo records 300)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the two cases (default 2)")
    args = parser.parse_args(argv)
    if args.points < 2 or args.rounds < 1:
        parser.error("--points must be at least 2 and --rounds positive")
    print(f"beta-VAE metric of {args.model}: {args.points} training and {args.points // 2} "
          f"evaluation points (64 image pairs each), one thread; {args.rounds} rounds", flush=True)
    runs = {name: [] for name in CASES}
    for r in range(args.rounds):
        for name, settings in CASES.items():
            runs[name].append(run_case(args.model, args.points, settings))
            x = runs[name][-1]
            print(f"  round {r + 1}: {name:28s} wall {x['wall']:6.1f} s, user {x['user']:6.1f} s, "
                  f"system {x['sys']:6.1f} s, {x['minflt']:>10,d} minor faults", flush=True)
    print(f"\n{'case':28s} {'wall s':>7s} {'user s':>7s} {'system s':>9s} {'minor faults':>13s}  (medians)")
    med = {}
    for name, xs in runs.items():
        med[name] = {k: statistics.median(x[k] for x in xs) for k in ("wall", "user", "sys", "minflt")}
        m = med[name]
        print(f"{name:28s} {m['wall']:7.1f} {m['user']:7.1f} {m['sys']:9.1f} {m['minflt']:13,.0f}")
    a, b = (med[n]["wall"] for n in CASES)
    print(f"wall time with the settings / with glibc's defaults: {b / a:.2f}")
    scores = {x["score"] for xs in runs.values() for x in xs}
    print(f"scores: {sorted(scores)} ({'identical' if len(scores) == 1 else 'DIFFERENT'})")
    return 0 if len(scores) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
