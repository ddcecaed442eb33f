"""How long each metric takes, and how much of it is the representation itself.

    python benchmarks/bench_metrics.py            # reduced sizes (minutes on a laptop CPU)
    python benchmarks/bench_metrics.py --full     # every metric at its defaults (GPU advised)
    python benchmarks/bench_metrics.py --repeat 3 --json benchmarks/results/metrics_cpu.json

The representation is an untrained Burgess encoder (``baselines.untrained_encoder``): scoring
cost does not depend on the weights. For each metric we time the whole call and, separately,
the time spent inside the representation (synchronised on a GPU); the rest -- rendering,
sampling, classifiers, mutual information -- is the metric's own overhead, reported as a
percentage of the encoder time (target: <= 20%). The paper defaults encode up to 1.9 million
images; at reduced sizes the printout says which sizes were used and extrapolates the
encoder time of the defaults from the measured throughput. The encoder is warmed up (one
batch) before the first metric, so no metric is charged for the first call's set-up.

``--json PATH`` also writes every row, with the machine (device, CPU, threads, load average),
the library and torch versions, the date and each metric's keyword arguments, atomically to
PATH; chapter 8 of the book (section 7) prints its table from
``benchmarks/results/metrics_cpu.json``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import torch

import bvae_lib
from bvae_lib.baselines import untrained_encoder
from bvae_lib.checkpoint import write_json
from bvae_lib.data import DSprites
from bvae_lib.metrics.registry import REGISTRY


class Timed:
    """Wrap a representation and accumulate the seconds spent inside it."""

    def __init__(self, fn, device):
        self.fn, self.device, self.seconds, self.images = fn, device, 0.0, 0

    def __call__(self, x):
        start = time.perf_counter()
        out = self.fn(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        self.images += x.shape[0]
        return out


# (name, function from the metric registry, reduced keyword arguments, images encoded at the
# defaults). The reduced sizes are the benchmark's own: large enough that the metric's overhead
# is measured against a representative encoder time (the registry's `fast` sizes are for a look
# at a score, not for a timing).
REDUCED = {
    "beta_vae": (REGISTRY["beta_vae"].function, dict(num_train=100, num_eval=50), 1_920_000),
    "mig_histogram": (REGISTRY["mig"].function, dict(), 10_000),
    "mig_sampling": (REGISTRY["mig"].function,
                     dict(estimator="sampling", num_points=5_000, num_samples=5_000), 737_280),
    "factor_vae": (REGISTRY["factor_vae"].function,
                   dict(num_train=150, num_eval=75, num_variance_estimate=5_000), 970_000),
    "dci": (REGISTRY["dci"].function, dict(), 15_000),
    "sap": (REGISTRY["sap"].function, dict(), 15_000),
}
DEFAULTS = {"mig_sampling": dict(estimator="sampling")}


def sampling_mig_densities(n, num_samples, d, factor_sizes):
    """Gaussian densities the sampling MIG evaluates on n points (classes of equal size)."""
    total = min(num_samples, n) * n * d                               # H(z_j)
    for size in factor_sizes:                                         # H(z_j | v_k = v)
        members = n / size
        total += size * min(num_samples, members) * members * d
    return total


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="run every metric at its defaults")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--only", nargs="*", choices=sorted(REDUCED), help="metrics to run")
    parser.add_argument("--repeat", type=int, default=1,
                        help="time each metric this many times and report the median run")
    parser.add_argument("--json", metavar="PATH", help="also write the results to PATH")
    args = parser.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                          if args.device == "auto" else args.device)
    dataset = DSprites(device)
    encoder = untrained_encoder(seed=0, device=device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    machine = dict(device=str(device), gpu=gpu, cpu=cpu_name(), cpu_count=os.cpu_count(),
                   torch_threads=torch.get_num_threads(),
                   load_average=[round(x, 2) for x in os.getloadavg()],
                   torch=torch.__version__, bvae_lib=bvae_lib.__version__,
                   date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    print(f"device: {device} ({gpu + ', ' if gpu else ''}{machine['cpu']}, "
          f"{machine['torch_threads']} torch threads, load average {machine['load_average']}); "
          f"representation: {encoder}")
    print(f"sizes: {'defaults' if args.full else 'REDUCED (see kwargs); --full for defaults'}")
    with torch.no_grad():                              # warm-up: first-call set-up is not scored
        warm_up = dataset.sample(256, generator=torch.Generator().manual_seed(0))[0]
        encoder(warm_up)
        encoder.model.encode(warm_up)
    header = (f"{'metric':<14} {'images':>9} {'wall s':>8} {'encoder s':>9} {'overhead':>9} "
              f"{'img/s':>7} {'defaults: images':>16} {'est. encoder s':>14}  kwargs")
    print(header)
    print("-" * len(header))
    rows = []
    for name in args.only or REDUCED:
        fn, reduced, default_images = REDUCED[name]
        kwargs = DEFAULTS.get(name, {}) if args.full else reduced
        runs = []
        for _ in range(max(1, args.repeat)):
            if name.startswith("mig_sampling"):
                timed = Timed(encoder.model.encode, device)  # the sampling estimator needs q(z|x)
            else:
                timed = Timed(encoder, device)
            start = time.perf_counter()
            result = fn(timed, dataset, **kwargs)
            if device.type == "cuda":
                torch.cuda.synchronize()
            wall = time.perf_counter() - start
            runs.append(((wall - timed.seconds) / timed.seconds, wall, timed, result))
        runs.sort(key=lambda r: r[0])
        _, wall, timed, result = runs[len(runs) // 2]           # the median run
        rate = timed.images / timed.seconds
        overhead = (wall - timed.seconds) / timed.seconds
        print(f"{name:<14} {timed.images:>9,} {wall:>8.1f} {timed.seconds:>9.1f} "
              f"{overhead:>8.0%} {rate:>7.0f} {default_images:>16,} "
              f"{default_images / rate:>14.0f}  {kwargs}  score={result.score:.3f}", flush=True)
        row = dict(metric=name, kwargs=kwargs, images=timed.images, wall_s=round(wall, 3),
                   encoder_s=round(timed.seconds, 3), overhead=round(overhead, 4),
                   images_per_s=round(rate, 1), default_images=default_images,
                   default_encoder_s=round(default_images / rate, 1),
                   score=round(float(result.score), 4), repeats=len(runs),
                   overhead_all=[round(r[0], 4) for r in runs])
        if name == "mig_sampling" and not args.full:
            # Its own work grows as N^2: project the defaults from the measured density rate.
            d = result.mutual_info.shape[0]
            done = sampling_mig_densities(timed.images, kwargs["num_samples"], d,
                                          dataset.factor_sizes)
            full = sampling_mig_densities(len(dataset), 10_000, d, dataset.factor_sizes)
            density_rate = done / max(wall - timed.seconds, 1e-9)
            projected = full / density_rate / (default_images / rate)
            print(f"{'':<14} {done:.2e} densities at {density_rate:.2e}/s; at the defaults "
                  f"{full:.2e} densities = {full / density_rate:.0f} s of its own work against "
                  f"{default_images / rate:.0f} s of encoder (projected overhead "
                  f"{projected:.0%})", flush=True)
            row.update(densities=done, densities_per_s=round(density_rate),
                       default_densities=full, default_overhead_projected=round(projected, 3))
        rows.append(row)
    if args.json:
        command = "python benchmarks/bench_metrics.py" + (" --full" if args.full else "") + (
            f" --only {' '.join(args.only)}" if args.only else "") + (
            f" --repeat {args.repeat}" if args.repeat != 1 else "") + f" --json {args.json}"
        write_json(args.json, dict(command=command, sizes="defaults" if args.full else "reduced",
                                   representation=str(encoder), machine=machine,
                                   target_overhead=0.2, results=rows))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
