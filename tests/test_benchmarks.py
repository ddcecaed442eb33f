"""The benchmark scripts run, and the record the book prints (chapter 8, section 7) is complete."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "benchmarks" / "results" / "metrics_cpu.json"
METRICS = {"beta_vae", "mig_histogram", "mig_sampling", "factor_vae", "dci", "sap"}


def test_metrics_record_is_complete_and_says_how_it_was_made():
    record = json.loads(RECORD.read_text())
    argv = shlex.split(record["command"])
    assert argv[:2] == ["python", "benchmarks/bench_metrics.py"]
    assert argv[argv.index("--json") + 1] == "benchmarks/results/metrics_cpu.json"
    for key in ("device", "cpu", "torch_threads", "torch", "bvae_lib", "date", "load_average"):
        assert key in record["machine"], key
    assert {row["metric"] for row in record["results"]} == METRICS
    for row in record["results"]:
        assert row["images"] > 0 and row["encoder_s"] > 0 and row["wall_s"] >= row["encoder_s"]
        # the seconds are stored to 3 decimals: the ratio recomputed from them is off by at most
        # 5e-4 (1 + wall / encoder) / encoder, plus the ratio's own rounding to 4 decimals
        rounding = 5e-4 * (1 + row["wall_s"] / row["encoder_s"]) / row["encoder_s"] + 5e-5
        assert abs(row["overhead"] - (row["wall_s"] - row["encoder_s"]) / row["encoder_s"]) \
            <= rounding + 1e-9
        assert row["default_images"] >= row["images"]
    sampling = next(row for row in record["results"] if row["metric"] == "mig_sampling")
    assert sampling["default_densities"] > sampling["densities"] > 0


def test_bench_metrics_writes_its_record(tmp_path):
    out = tmp_path / "record.json"
    run = subprocess.run([sys.executable, "benchmarks/bench_metrics.py", "--only", "mig_histogram",
                          "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    assert "mig_histogram" in run.stdout and f"wrote {out}" in run.stdout
    record = json.loads(out.read_text())
    assert [row["metric"] for row in record["results"]] == ["mig_histogram"]
    assert record["results"][0]["images"] == 10_000 and record["sizes"] == "reduced"
    assert record["command"].endswith(f"--only mig_histogram --json {out}")


def test_device_check_prints_its_plan_within_eight_minutes():
    run = subprocess.run([sys.executable, "benchmarks/device_check.py", "--dry-run"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    head = run.stdout.splitlines()[0]
    seconds = int(head.split("at most ")[1].split(" s")[0])
    assert seconds <= 8 * 60, head
    for step in ("tests", "bench_data", "bench_train_amp", "bench_train_compile",
                 "train_beta4", "evaluate_beta4"):
        assert step in run.stdout, step


def test_device_check_reads_the_benchmarks_records(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import device_check
    finally:
        sys.path.pop(0)
    record = tmp_path / "bench_train_amp.json"
    record.write_text(json.dumps({"ratios": {"wall": {"loop/bare": 0.972}}}))
    assert device_check.figures("bench_train_amp", "", record)["ratios"]["wall"]["loop/bare"] \
        == 0.972
    for name, cmd, _ in device_check.plan(tmp_path, 10):
        if name.startswith("bench_train"):            # each benchmark writes its own record
            assert cmd[cmd.index("--json") + 1] == str(tmp_path / f"{name}.json")
    assert device_check.figures("tests", "3 failed, 40 passed in 9s", tmp_path / "none.json") \
        == {"passed": 40, "failed": 3}


def test_bench_train_compare_runs_and_writes_its_figures(tmp_path):
    out = tmp_path / "train.json"
    run = subprocess.run([sys.executable, "benchmarks/bench_train.py", "--compare", "--steps",
                          "2", "--rounds", "1", "--batch-size", "8", "--threads", "1", "--json",
                          str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    record = json.loads(out.read_text())
    assert set(record["arms"]) == {"before (fp32, NCHW, eager)", "today's defaults"}
    assert record["arms"]["before (fp32, NCHW, eager)"]["precision"] == "fp32"
    assert all(v > 0 for v in record["images_per_second"]["wall"].values())


def test_bench_malloc_compares_the_two_settings_and_finds_the_same_score():
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "benchmarks/bench_malloc.py", "--points", "4",
                          "--rounds", "1"], cwd=root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "glibc's defaults" in run.stdout and "bvae_lib._memory settings" in run.stdout
    assert "(identical)" in run.stdout


def test_keep_freed_buffers_applies_where_glibc_runs_and_is_idempotent():
    import platform

    from bvae_lib._memory import MALLOC_ENV, MMAP_THRESHOLD, keep_freed_buffers
    from bvae_lib.book import MALLOC_ENV as BOOK_MALLOC_ENV

    applied = keep_freed_buffers()
    assert applied == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    assert keep_freed_buffers() == applied
    assert BOOK_MALLOC_ENV is MALLOC_ENV and MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"] == str(MMAP_THRESHOLD)
