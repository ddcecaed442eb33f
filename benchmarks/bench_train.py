"""How fast is the training loop, and how much does it cost on top of the model?

Two modes, each timing its arms in alternating rounds in one run (these machines are noisy: a
comparison is only fair side by side):

* default -- the **bare step** (forward + backward + Adam on one fixed batch, nothing else,
  with the loop's precision and memory layout) against the **loop** (``bvae_lib.train.train``:
  rendering each batch on the device, the objective, the optimiser, history on the device,
  progress off); prints their ratio (target: loop >= 0.95 x bare, batch 64, Burgess network);
* ``--compare`` -- the loop with the configuration it had before it had speed switches (fp32,
  NCHW, eager: ``TrainConfig(amp=False, channels_last=False)``) against the loop with today's
  defaults (``TrainConfig()``: bf16 autocast where the device computes it in hardware,
  channels-last), and with ``--compile`` a third arm that adds ``torch.compile``; prints the
  speed-ups (target on the CPU: >= 1.3x).

On the CPU both wall time and *process CPU time* are measured: on a machine shared with other
jobs the wall-clock rate of a round swings by 2x with the neighbours' load, while the CPU time
our process spends is the work it did -- so the CPU-time figures are the ones to read there.
On a GPU only wall time means anything, and the wall time of a paper-scale run (300,000 steps
of batch 64) is extrapolated from the loop's rate. ``--json PATH`` writes the figures.

    python benchmarks/bench_train.py                         # CPU: 6 rounds of 8 steps
    python benchmarks/bench_train.py --compare --threads 1 --rounds 8 --steps 10
    python benchmarks/bench_train.py --steps 300 --rounds 3  # a GPU

On a CPU shared with other jobs, ``--threads 1`` gives far steadier figures: with two threads
the OpenMP workers spin-wait for each other whenever a neighbour preempts one of them, and that
waiting lands on whichever side of the comparison happened to be running.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bvae_lib.data import DSprites
from bvae_lib.models import ModelConfig
from bvae_lib.objectives import BetaVAEConfig
from bvae_lib.train import (PAPER_STEPS, TrainConfig, _Step, cpu_has_native_bf16,
                            pick_device, precision, train)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn):
    """(result, wall seconds, process CPU seconds) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def bare_steps(model_config, objective_config, x, steps, device, config) -> None:
    """forward + backward + Adam on the fixed batch ``x``, ``steps`` times: the training loop's
    own step (``bvae_lib.train._Step``: the same precision, memory layout and compilation, a
    fresh model as each call of train() builds one), without drawing batches or recording."""
    step = _Step(model_config, objective_config, None, config, device, None)
    step.model.train()
    if step.channels_last:                      # converted once here, not at every step
        x = x.contiguous(memory_format=torch.channels_last)
    step.next_batch = lambda: x
    for i in range(steps):
        step.update(step.losses(i)["loss"])
    sync(device)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="steps per round (default 8)")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds (default 6)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--architecture", default="burgess")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compare", action="store_true",
                        help="the loop before its speed switches against today's defaults")
    parser.add_argument("--no-amp", action="store_true", help="fp32 (default: automatic)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile (with --compare: a third arm)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", metavar="PATH", help="write the figures to PATH")
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model_config = ModelConfig(architecture=args.architecture)
    objective_config = BetaVAEConfig()
    dataset = DSprites(device)
    x = dataset.sample(args.batch_size, torch.Generator(device).manual_seed(0))[0]
    base = dict(steps=args.steps, batch_size=args.batch_size, device=str(device), log_every=10,
                progress=False)
    if args.compare:
        arms = {"before (fp32, NCHW, eager)": TrainConfig(**base, amp=False,
                                                          channels_last=False),
                "today's defaults": TrainConfig(**base)}
        if args.compile:
            arms["defaults + compile"] = TrainConfig(**base, compile=True)
    else:
        config = TrainConfig(**base, amp=False if args.no_amp else None, compile=args.compile)
        arms = {"bare": config, "loop": config}
    print(f"device {device} ({torch.get_num_threads()} CPU threads), {args.architecture}, "
          f"batch {args.batch_size}, {args.rounds} rounds x {args.steps} steps, torch "
          f"{torch.__version__}")
    for name, config in arms.items():
        print(f"  {name}: precision {precision(config, device)}, channels-last "
              f"{config.channels_last is not False}, compile {config.compile}")

    def run(name, config, steps):
        if name == "bare":
            return bare_steps(model_config, objective_config, x, steps, device, config)
        return train(model_config, objective_config, dataset,
                     TrainConfig(**{**vars(config), "steps": steps})), sync(device)

    # warm-up: first-call costs (allocator, cuDNN autotuning, compiling, lazy imports)
    for name, config in arms.items():
        run(name, config, 2)

    images = args.steps * args.batch_size
    wall = {name: [] for name in arms}
    cpu = {name: [] for name in arms}
    for r in range(args.rounds):
        for name, config in arms.items():
            _, w, c = timed(lambda: run(name, config, args.steps))
            wall[name].append(w), cpu[name].append(c)
        print(f"  round {r + 1}: " + ", ".join(
            f"{name} {images / wall[name][-1]:.0f} / {images / cpu[name][-1]:.0f}"
            for name in arms) + " img/s (wall / CPU time)")

    # Best round of each (timeit's rule: interference only ever adds time, so the fastest
    # round is the closest to the true cost), then the plain totals.
    names = list(arms)
    import datetime
    import sys

    from bench_metrics import cpu_name

    record = {"command": "python benchmarks/bench_train.py " + " ".join(
                  sys.argv[1:] if argv is None else argv),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "cpu": cpu_name(), "bf16_instructions": cpu_has_native_bf16(),
              "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "batch_size": args.batch_size, "rounds": args.rounds, "steps": args.steps,
              "arms": {n: {"precision": precision(c, device),
                           "channels_last": c.channels_last is not False, "compile": c.compile}
                       for n, c in arms.items()},
              "images_per_second": {}, "ratios": {}}
    clocks = [("wall", wall)] if device.type == "cuda" else [("CPU time", cpu), ("wall", wall)]
    for clock, t in clocks:
        rates = {n: images / min(t[n]) for n in names}
        record["images_per_second"][clock] = {n: round(v, 1) for n, v in rates.items()}
        for n in names:
            print(f"{n}, {clock}: {rates[n]:.1f} img/s")
        first = names[0]
        for n in names[1:]:
            ratio, total = rates[n] / rates[first], sum(t[first]) / sum(t[n])
            label = "loop/bare" if not args.compare else f"{n} / {first}"
            target = "target >= 0.95" if not args.compare else "target >= 1.3 on the CPU"
            record["ratios"].setdefault(clock, {})[label] = round(ratio, 3)
            print(f"ratio {label} ({clock}, best of {args.rounds} rounds): {ratio:.3f}   "
                  f"(all rounds summed: {total:.3f}; {target})")
    if device.type == "cuda":
        loop = names[-1]
        rate = images / min(wall[loop])
        hours = PAPER_STEPS * args.batch_size / rate / 3600
        record["paper_scale_hours"] = round(hours, 3)
        print(f"paper scale ({PAPER_STEPS:,} steps of batch {args.batch_size}) on "
              f"{torch.cuda.get_device_name(device)}: ~{hours:.2f} h ({rate / args.batch_size:.0f}"
              f" steps/s) extrapolated from {args.rounds * args.steps} measured steps")
    if args.json:
        import json

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.json}")
    return record


if __name__ == "__main__":
    main()
