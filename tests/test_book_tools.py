"""The book's machinery (bvae_lib.book): the rules every chapter must satisfy, and the tools that
enforce them can tell a good notebook from a bad one."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from bvae_lib import book

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = book.toc_notebooks(ROOT)


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_every_chapter_passes_the_book_check(path):
    """Badge, setup cell, clean stored outputs, every cell executed, >= 80% compared by nbval."""
    report = book.check_notebook(path, ROOT)
    assert report.ok, f"{path.name}:\n" + "\n".join(report.problems)
    assert report.compared_fraction >= book.MIN_COMPARED_FRACTION


def test_toc_lists_the_foundations_chapters_in_order():
    names = [p.name for p in CHAPTERS]
    first = ["01_disentanglement.ipynb", "02_vae_elbo.ipynb", "03_beta_lagrangian.ipynb"]
    assert names[:3] == first
    assert names == sorted(names), "chapters must be listed in the order of their numbers"


def test_badge_and_install_line_use_the_repository_url_of_config():
    url, branch, _ = book.repository_url(book.read_config(ROOT))
    badge = book.colab_badge(ROOT / "book" / "02_vae_elbo.ipynb", ROOT)
    owner_name = url.removeprefix("https://github.com/")
    assert f"/github/{owner_name}/blob/{branch}/book/02_vae_elbo.ipynb)" in badge
    assert f"git+{url}\"" in book.setup_cell_source(ROOT)


def _good_notebook(tmp_path: Path) -> Path:
    """A copy of the book skeleton (config, toc) with a minimal, correct chapter."""
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "book").mkdir()
    path = tmp_path / "book" / "01_disentanglement.ipynb"
    nb = nbformat.v4.new_notebook()
    title = "# 1. Test\n\n" + book.colab_badge(path, tmp_path) + "\n\nWhat it answers."
    nb.cells = [nbformat.v4.new_markdown_cell(title),
                nbformat.v4.new_code_cell(book.setup_cell_source(tmp_path), execution_count=1),
                nbformat.v4.new_code_cell("print(1 + 1)", execution_count=2,
                                          outputs=[nbformat.v4.new_output(
                                              "stream", name="stdout", text="2\n")])]
    nb.metadata[book.RECORD_KEY] = book.environment_record()
    nbformat.write(nb, path)
    return path


def test_check_accepts_a_correct_notebook(tmp_path):
    report = book.check_notebook(_good_notebook(tmp_path), tmp_path)
    assert report.ok, report.problems
    assert (report.code_cells, report.compared_cells) == (2, 2)


@pytest.mark.parametrize("defect", ["wrong_badge", "edited_setup", "stderr", "error",
                                    "unexecuted", "too_many_ignored", "svg", "random_html_id",
                                    "no_environment_record"])
def test_check_rejects_each_kind_of_defect(tmp_path, defect):
    path = _good_notebook(tmp_path)
    nb = nbformat.read(path, as_version=4)
    cell = nb.cells[2]
    if defect == "wrong_badge":
        nb.cells[0].source = nb.cells[0].source.replace("bvae-book/bvae-book", "someone/fork")
    elif defect == "edited_setup":
        nb.cells[1].source = nb.cells[1].source.replace("seed=0", "seed=1")
    elif defect == "stderr":
        cell.outputs.append(nbformat.v4.new_output("stream", name="stderr", text="UserWarning"))
    elif defect == "error":
        cell.outputs.append(nbformat.v4.new_output("error", ename="ValueError", evalue="x",
                                                   traceback=[]))
    elif defect == "unexecuted":
        cell.execution_count = None
    elif defect == "too_many_ignored":
        for i in range(3):
            c = nbformat.v4.new_code_cell("1", execution_count=3 + i)
            c.metadata["tags"] = ["nbval-ignore-output"]
            nb.cells.append(c)
    elif defect == "svg":
        cell.outputs.append(nbformat.v4.new_output("display_data",
                                                   data={"image/svg+xml": "<svg/>"}))
    elif defect == "random_html_id":
        cell.outputs.append(nbformat.v4.new_output(
            "display_data", data={"text/html": '<div id="_anim_img' + "ab12" * 8 + '">'}))
    elif defect == "no_environment_record":
        del nb.metadata[book.RECORD_KEY]
    nbformat.write(nb, path)
    report = book.check_notebook(path, tmp_path)
    assert not report.ok, f"check missed the defect {defect!r}"


def test_check_reports_a_notebook_executed_in_another_environment(tmp_path):
    """Other versions or CPU kernels are reported (where to look if an output differs), but are
    not a defect of the notebook: its compared outputs are meant to hold on any CPU."""
    path = _good_notebook(tmp_path)
    nb = nbformat.read(path, as_version=4)
    record = nb.metadata[book.RECORD_KEY]
    record["packages"]["numpy"] = "0.0.1"
    record["torch_cpu_capability"] = "SOME_OTHER_CPU"
    nbformat.write(nb, path)
    report = book.check_notebook(path, tmp_path)
    assert report.ok, report.problems
    assert len(report.environment_differences) == 2
    assert any("numpy 0.0.1" in d for d in report.environment_differences)
    assert any("SOME_OTHER_CPU" in d for d in report.environment_differences)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert book.check_notebook(_good_notebook(fresh), fresh).environment_differences == []


def _lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_the_lock_pins_every_requirement_exactly():
    pins = _lock_pins()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name = re.split(r"[<>=!~\[;\s]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
        if name and not name.startswith("#"):
            assert name in pins, f"requirements.lock has no pin for {name}: run make lock"


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_every_chapter_was_executed_under_the_lock(path):
    """The stored outputs were made with the locked versions (make execute after make lock)."""
    record = nbformat.read(path, as_version=4).metadata.get(book.RECORD_KEY)
    assert record, f"{path.name} has no environment record: run make execute"
    pins = _lock_pins()
    for name, version in record["packages"].items():
        assert version == pins[name], (f"{path.name} was executed with {name} {version}, the lock "
                                       f"pins {pins[name]}: run make execute")
    assert record["threads"] == book.BOOK_THREADS


def test_execute_stores_outputs_and_strips_run_metadata(tmp_path):
    """One real kernel run (a few seconds): outputs stored, no timing metadata, GPU hidden."""
    path = _good_notebook(tmp_path)
    nb = nbformat.read(path, as_version=4)
    nb.cells[2].source = ("import os\nprint(repr(os.environ['CUDA_VISIBLE_DEVICES']), "
                          "os.environ['BVAE_PROGRESS'], os.environ['MALLOC_TRIM_THRESHOLD_'], device)")
    nb.cells[2].outputs = []
    nbformat.write(nb, path)
    book.execute_notebook(path, timeout=120)
    done = nbformat.read(path, as_version=4)
    assert done.cells[2].outputs[0]["text"] == f"'' 0 {book.MALLOC_ENV['MALLOC_TRIM_THRESHOLD_']} cpu\n"
    assert done.metadata[book.RECORD_KEY] == book.environment_record()
    assert all("execution" not in c.metadata for c in done.cells)
    assert "version" not in done.metadata["language_info"]
    assert book.check_notebook(path, tmp_path).ok


def test_nbval_kernels_get_the_chapters_kernel_environment():
    """pytest --nbval book/ loads book/conftest.py, whose settings the kernels inherit; a value
    the user set already wins."""
    import subprocess
    import sys
    names = sorted(book.MALLOC_ENV)
    code = ("import os, runpy; runpy.run_path('book/conftest.py'); "
            "print(*[os.environ[k] for k in %r])" % names)
    env = {k: v for k, v in os.environ.items() if k not in book.MALLOC_ENV}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == [book.MALLOC_ENV[k] for k in names]
    env[names[0]] = "12345"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == "12345"


@pytest.mark.parametrize("idle, passive", [(2.0, False), (1.9, False), (1.2, True), (0.3, True),
                                           (None, True)])
def test_openmp_threads_sleep_only_when_fewer_cores_are_idle_than_a_chapter_uses(
        monkeypatch, idle, passive):
    monkeypatch.delenv("BVAE_BOOK_THREADS", raising=False)
    monkeypatch.setattr(book, "idle_cores", lambda: idle)
    env = book.kernel_env()
    assert ("OMP_WAIT_POLICY" in env) == passive
    assert env.get("OMP_WAIT_POLICY", "PASSIVE") == "PASSIVE"
    assert all(env[k] == v for k, v in book.MALLOC_ENV.items())


def test_idle_cores_reads_this_machine():
    idle = book.idle_cores(0.05)
    if idle is None:
        pytest.skip("no /proc/stat here")
    assert 0.0 <= idle <= (os.cpu_count() or 1) + 1e-9


def test_a_library_figure_is_stored_as_png_even_before_any_pyplot_figure(tmp_path):
    """bvae_lib.viz makes Figures without pyplot; matplotlib resolves its backend lazily, so
    until setup_notebook activates the inline backend, such a figure as a chapter's first would
    be stored as "<Figure ...>" text with no image (the HTML book would show the text)."""
    path = _good_notebook(tmp_path)
    nb = nbformat.read(path, as_version=4)
    nb.cells[2].source = "from bvae_lib import viz\nviz.plot_rate_distortion([2.0, 1.0], [1.0, 2.0])"
    nb.cells[2].outputs = []
    nbformat.write(nb, path)
    done = book.execute_notebook(path, timeout=120)
    assert "image/png" in done.cells[2].outputs[0]["data"]


def test_execute_fails_loudly_and_leaves_the_file_alone(tmp_path):
    path = _good_notebook(tmp_path)
    nb = nbformat.read(path, as_version=4)
    nb.cells[2].source = "import sys\nprint('oops', file=sys.stderr)"
    nbformat.write(nb, path)
    before = path.read_bytes()
    with pytest.raises(book.NotebookExecutionError, match="stderr"):
        book.execute_notebook(path, timeout=120)
    assert path.read_bytes() == before


@pytest.fixture
def keep_threads():
    """setup_notebook sets the process's thread pools: put them back for the other tests."""
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits
    before_torch = torch.get_num_threads()
    before_pools = {p["user_api"]: p["num_threads"] for p in threadpool_info()}
    yield
    torch.set_num_threads(before_torch)
    for api, n in before_pools.items():
        threadpool_limits(limits=n, user_api=api)


def test_setup_notebook_pins_the_thread_count(monkeypatch, keep_threads):
    import torch
    from threadpoolctl import threadpool_info
    monkeypatch.delenv("BVAE_BOOK_THREADS", raising=False)
    book.setup_notebook(seed=0)
    assert torch.get_num_threads() == book.BOOK_THREADS
    assert all(p["num_threads"] == book.BOOK_THREADS for p in threadpool_info())
    monkeypatch.setenv("BVAE_BOOK_THREADS", "1")
    book.setup_notebook(seed=0)
    assert torch.get_num_threads() == 1
    monkeypatch.setenv("BVAE_BOOK_THREADS", "0")
    with pytest.raises(ValueError, match="BVAE_BOOK_THREADS"):
        book.setup_notebook(seed=0)


def test_setup_notebook_seeds_and_returns_a_device(monkeypatch, keep_threads):
    import numpy as np
    import torch
    monkeypatch.delenv("BVAE_PROGRESS", raising=False)
    for key in ("TQDM_DISABLE", "PYTHONWARNINGS"):    # restored after the test
        monkeypatch.setenv(key, os.environ.get(key, ""))
    d = book.setup_notebook(seed=3)
    a = (torch.rand(3), np.random.rand(3))
    book.setup_notebook(seed=3)
    b = (torch.rand(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert d.type in ("cpu", "cuda")
    assert os.environ["BVAE_PROGRESS"] == "0"
    with pytest.raises(TypeError, match="seed"):
        book.setup_notebook(seed=1.5)


def test_setup_notebook_leaves_warnings_visible(keep_threads, monkeypatch):
    """A chapter's warnings are not silenced (their causes are fixed); execute refuses stderr."""
    import warnings
    for key in ("TQDM_DISABLE",):
        monkeypatch.setenv(key, os.environ.get(key, ""))
    with warnings.catch_warnings():
        book.setup_notebook(seed=0)
        with pytest.warns(UserWarning, match="still seen"):
            warnings.warn("still seen", UserWarning)
