"""How much does the training loop cost on top of the model? (issue 4)

Measures, in one run on the same machine, images per second of

* the **bare step**: forward + backward + Adam on one fixed batch, nothing else;
* the **loop**: ``bvae_lib.train.train`` -- rendering each batch on the device, the objective,
  the optimiser, history on the device, progress off --

and prints their ratio (target: loop >= 0.95 x bare on the CPU, batch 64, Burgess network).
The two are timed in alternating rounds, each on a freshly built model, so that a machine whose
load changes during the run biases neither. On the CPU both wall time and *process CPU time* are
measured: on a machine shared with other jobs the wall-clock rate of a round swings by 2x with
the neighbours' load, while the CPU time our process spends is the work it did -- so the CPU-time
ratio is the one to read there. On a GPU only wall time means anything (the work is on the
device); the bare step uses the same mixed precision and memory layout as the loop, and the wall
time of a paper-scale run (300,000 steps of batch 64) is extrapolated from the loop's rate.

    python benchmarks/bench_train.py                         # CPU: 6 rounds of 8 steps
    python benchmarks/bench_train.py --threads 1 --rounds 8 --steps 4   # a shared CPU
    python benchmarks/bench_train.py --steps 300 --rounds 3  # a GPU

On a CPU shared with other jobs, ``--threads 1`` gives far steadier figures: with two threads
the OpenMP workers spin-wait for each other whenever a neighbour preempts one of them, and that
waiting lands on whichever side of the comparison happened to be running.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from bvae_lib.data import DSprites
from bvae_lib.models import ModelConfig, build_model
from bvae_lib.objectives import BetaVAEConfig, build_objective
from bvae_lib.train import PAPER_STEPS, TrainConfig, pick_device, train


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn):
    """(result, wall seconds, process CPU seconds) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def bare_steps(model_config, objective_config, x, steps, device, amp) -> None:
    """forward + backward + Adam on the fixed batch ``x``, ``steps`` times (a fresh model, as
    each call of train() builds one)."""
    model = build_model(model_config).to(device).train()
    objective = build_objective(objective_config, decoder=model_config.decoder)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    context, scaler, cast = contextlib.nullcontext(), None, False
    if device.type == "cuda":                   # the loop's GPU settings (bvae_lib.train)
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        if amp:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            context, cast = torch.autocast("cuda", dtype=dtype), True
            if dtype is torch.float16:
                scaler = torch.amp.GradScaler("cuda")
    for step in range(steps):
        with context:
            out = model(x)
        if cast:
            out = {k: v.float() if torch.is_tensor(v) else v for k, v in out.items()}
        loss = objective(out, x, step)["loss"]
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
    sync(device)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="steps per round (default 8)")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds (default 6)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--architecture", default="burgess")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-amp", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model_config = ModelConfig(architecture=args.architecture)
    objective_config = BetaVAEConfig()
    dataset = DSprites(device)
    x = dataset.sample(args.batch_size, torch.Generator(device).manual_seed(0))[0]
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, device=str(device),
                         amp=not args.no_amp, compile=args.compile, log_every=10,
                         progress=False)
    print(f"device {device} ({torch.get_num_threads()} CPU threads), {args.architecture}, "
          f"batch {args.batch_size}, {args.rounds} rounds x {args.steps} steps, torch "
          f"{torch.__version__}")

    # warm-up: first-call costs (allocator, cuDNN autotuning, lazy imports) are not the loop's
    bare_steps(model_config, objective_config, x, 2, device, not args.no_amp)
    train(model_config, objective_config, dataset, TrainConfig(**{**vars(config), "steps": 2}))

    images = args.steps * args.batch_size
    wall = {"bare": [], "loop": []}
    cpu = {"bare": [], "loop": []}
    for r in range(args.rounds):
        _, w, c = timed(lambda: bare_steps(model_config, objective_config, x, args.steps,
                                           device, not args.no_amp))
        wall["bare"].append(w), cpu["bare"].append(c)
        _, w, c = timed(lambda: (train(model_config, objective_config, dataset, config),
                                 sync(device)))
        wall["loop"].append(w), cpu["loop"].append(c)
        print(f"  round {r + 1}: bare {images / wall['bare'][-1]:7.1f} img/s, loop "
              f"{images / wall['loop'][-1]:7.1f} img/s (wall);  bare "
              f"{images / cpu['bare'][-1]:7.1f}, loop {images / cpu['loop'][-1]:7.1f} img/s "
              f"(CPU time)")

    # Best round of each (timeit's rule: interference only ever adds time, so the fastest
    # round is the closest to the true cost), then the plain totals.
    clocks = [("wall", wall)] if device.type == "cuda" else [("CPU time", cpu), ("wall", wall)]
    for name, t in clocks:
        bare_rate, loop_rate = images / min(t["bare"]), images / min(t["loop"])
        total = sum(t["bare"]) / sum(t["loop"])
        print(f"bare step (forward+backward+Adam, fixed batch), {name}: {bare_rate:.1f} img/s")
        print(f"training loop (bvae_lib.train.train), {name}: {loop_rate:.1f} img/s")
        print(f"ratio loop/bare ({name}, best of {args.rounds} rounds): "
              f"{loop_rate / bare_rate:.3f}   (all rounds summed: {total:.3f}; target >= 0.95)")
    if device.type == "cuda":
        loop_rate = images / min(wall["loop"])
        hours = PAPER_STEPS * args.batch_size / loop_rate / 3600
        print(f"paper scale ({PAPER_STEPS:,} steps of batch {args.batch_size}) on "
              f"{torch.cuda.get_device_name(device)}: ~{hours:.2f} h extrapolated from "
              f"{args.rounds * args.steps} measured steps")


if __name__ == "__main__":
    main()
