"""One command that checks a CUDA GPU: tests, throughput, a 20,000-step run, one JSON record.

    make device-check                                    # from a fresh checkout: installs the lock
    python benchmarks/device_check.py --dry-run          # the plan, on any machine

On one CUDA GPU, in about 8 minutes or less, it

1. runs the tests that exercise the GPU path (mixed precision, channels-last, compile, rendering
   on the device, a GPU checkpoint resumed on the CPU) -- ``tests/test_train.py`` and
   ``tests/test_data.py`` with CUDA present;
2. measures rendering (``bench_data.py --device cuda``) and the training loop
   (``bench_train.py``): loop/bare with AMP on and off, with ``torch.compile``, and the loop
   before its speed switches against today's defaults (``--compare``). (CUDA graphs through
   ``torch.compile(mode="reduce-overhead")`` are not a switch of the loop yet.);
3. trains beta = 4 for 20,000 steps with the defaults (``python -m bvae_lib train``; it is
   stopped at 130 s, i.e. below ~150 steps/s it times out and says so) and evaluates it
   (``python -m bvae_lib evaluate --fast``);
4. writes everything -- device, versions, commit, each step's output, exit status and seconds,
   the figures each step recorded -- to ``benchmarks/results/device_<gpu>_<date>.json``.

Nothing is asserted: it records. The goal to read against it: 300,000 steps of batch 64 in
<= 10 minutes on one H100-class GPU (>= 500 steps/s). A step that fails or runs past its
time limit is recorded as such and the next one runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def plan(run_dir: Path, steps: int) -> list[tuple[str, list[str], int]]:
    """(name, argv, time limit in seconds) of every step, in order."""
    def bench(name, *extra):     # bench_train writes its figures to a JSON record of its own
        return [PY, "benchmarks/bench_train.py", "--device", "cuda", "--steps", "300",
                "--rounds", "3", *extra, "--json", str(run_dir / f"{name}.json")]
    return [
        ("tests", [PY, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                   "tests/test_train.py", "tests/test_data.py"], 90),
        ("bench_data", [PY, "benchmarks/bench_data.py", "--device", "cuda"], 30),
        ("bench_train_amp", bench("bench_train_amp"), 35),
        ("bench_train_fp32", bench("bench_train_fp32", "--no-amp"), 35),
        ("bench_train_compile", bench("bench_train_compile", "--compile"), 80),
        ("bench_train_compare", bench("bench_train_compare", "--compare"), 40),
        ("train_beta4", [PY, "-m", "bvae_lib", "train", "--beta", "4", "--steps", str(steps),
                         "--device", "cuda", "--no-progress", "--out", str(run_dir / "beta4")],
         130),
        ("evaluate_beta4", [PY, "-m", "bvae_lib", "evaluate", str(run_dir / "beta4"), "--fast",
                            "--out", str(run_dir / "beta4_scores.json")], 40),
    ]


def figures(name: str, text: str, record: Path) -> dict:
    """The figures of one step, for the record (its raw output is kept too): a benchmark's own
    JSON record where it wrote one; pytest's counts of passed and failed tests."""
    if record.is_file():
        return json.loads(record.read_text())
    out = {}
    m = re.search(r"(\d+) passed", text)
    if m and name == "tests":
        out["passed"] = int(m.group(1))
        failed = re.search(r"(\d+) failed", text)
        out["failed"] = int(failed.group(1)) if failed else 0
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    parser.add_argument("--steps", type=int, default=20_000, help="steps of the beta = 4 run")
    parser.add_argument("--runs", default="runs/device_check", help="run directory")
    parser.add_argument("--json", help="record path (default benchmarks/results/device_*.json)")
    args = parser.parse_args(argv)
    run_dir = Path(args.runs)
    steps = plan(run_dir, args.steps)
    total = sum(limit for _, _, limit in steps)
    print(f"device check: {len(steps)} steps, at most {total} s in all")
    for name, cmd, limit in steps:
        print(f"  {name:20s} (<= {limit:3d} s): {' '.join(cmd)}")
    if args.dry_run:
        return 0

    import torch

    if not torch.cuda.is_available():
        print("error: no CUDA GPU here; the device check needs one (--dry-run prints the plan)",
              file=sys.stderr)
        return 2
    if (run_dir / "beta4").exists():
        print(f"error: {run_dir / 'beta4'} exists; remove it or pass --runs DIR", file=sys.stderr)
        return 2
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or None
    gpu = torch.cuda.get_device_name(0)
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": gpu, "torch": torch.__version__, "cuda": torch.version.cuda,
              "bf16": torch.cuda.is_bf16_supported(), "commit": commit,
              "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
              "goal": ">= 500 steps/s (300,000 steps of batch 64 in <= 10 min)", "steps": {}}
    env = {**os.environ, "BVAE_PROGRESS": "0"}
    for name, cmd, limit in steps:
        t = time.perf_counter()
        try:
            run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit,
                                 env=env)
            status, text = run.returncode, run.stdout + run.stderr
        except subprocess.TimeoutExpired as e:
            status = "timeout"
            text = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) \
                else (e.stdout or "")
        seconds = time.perf_counter() - t
        entry = {"command": " ".join(cmd), "status": status, "seconds": round(seconds, 1),
                 "figures": figures(name, text, run_dir / f"{name}.json"),
                 "output_tail": text[-4000:]}
        if name == "train_beta4" and status == 0:
            entry["figures"]["steps_per_second"] = round(args.steps / seconds, 1)
        if name == "evaluate_beta4" and (run_dir / "beta4_scores.json").is_file():
            entry["figures"] = {"scores": json.loads((run_dir / "beta4_scores.json").read_text())}
        record["steps"][name] = entry
        print(f"{name}: status {status} in {seconds:.0f} s {entry['figures']}", flush=True)
    stamp = record["date"][:10]
    out = Path(args.json) if args.json else (
        ROOT / "benchmarks" / "results" / f"device_{re.sub(r'[^A-Za-z0-9]+', '_', gpu)}_{stamp}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
