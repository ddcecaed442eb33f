"""The book's machinery: the setup cell every chapter runs, and the commands that keep notebooks honest.

Every chapter's second cell is the same (see :func:`setup_cell_source`)::

    from bvae_lib.book import setup_notebook
    device = setup_notebook(seed=0)

Two commands, run from the repository root::

    python -m bvae_lib.book execute [NOTEBOOK ...]   # regenerate stored outputs on the CPU, in order
    python -m bvae_lib.book check   [NOTEBOOK ...]   # badge, setup cell, outputs, nbval coverage

``execute`` is the only way outputs get into the repository: it runs each notebook top to bottom in
a kernel of *this* interpreter (``sys.executable``; no "python3" kernelspec is consulted), with the
GPU hidden (``CUDA_VISIBLE_DEVICES=""``) and progress bars off (``BVAE_PROGRESS=0``), fails on the
first error or on any output written to stderr, and strips the metadata that changes from run to
run (timings, kernel versions, widget state) so that a re-execution gives a small diff.
``check`` verifies what strict ``pytest --nbval book/`` and Colab rely on; it is also a test
(``tests/test_book_tools.py``).

Without notebook arguments both commands take the notebooks listed in ``_toc.yml``, in order.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._memory import MALLOC_ENV
from ._validate import is_int

__all__ = [
    "setup_notebook",
    "in_colab",
    "find_book_root",
    "read_config",
    "repository_url",
    "toc_notebooks",
    "colab_badge",
    "setup_cell_source",
    "execute_notebook",
    "check_notebook",
    "CheckReport",
    "environment_record",
    "record_differences",
    "book_threads",
    "kernel_env",
    "idle_cores",
    "main",
]

#: CPU threads every chapter computes with (:func:`setup_notebook`): the stored outputs were
#: made with this many, and a float reduction split over another number of threads rounds
#: differently, which a few hundred training steps amplify into other printed digits.
BOOK_THREADS = 2

#: The fraction of code cells nbval must compare (the rest carry ``nbval-ignore-output``).
MIN_COMPARED_FRACTION = 0.80

#: The packages whose versions decide the chapters' numbers: every executed notebook records them
#: (with torch's CPU kernels and the BLAS core type) under ``metadata[RECORD_KEY]``.
RECORDED_PACKAGES = ("torch", "numpy", "scipy", "scikit-learn", "matplotlib")
RECORD_KEY = "bvae_book"

#: Set for every kernel that runs a chapter (``execute`` here, ``pytest --nbval`` through
#: book/conftest.py) before the kernel starts: ``MALLOC_MMAP_THRESHOLD_`` (64 MB) and
#: ``MALLOC_TRIM_THRESHOLD_`` (1 GB), from :mod:`bvae_lib._memory`. By default glibc returns a
#: large freed block to the kernel at once, and the next training step faults the same pages back
#: in, zeroed -- seconds of system time per hundred steps. Kept in the heap, a 150-step run of
#: chapter 4's network takes about 25% less wall time, and the whole of ``pytest --nbval book/``
#: about 20%; the 64 MB threshold also covers the 33.5 MB activations of the metrics' batches of
#: 256 images. No result changes.


def idle_cores(interval: float = 0.25) -> float | None:
    """How many of this process's cores were idle over the next ``interval`` seconds, from
    Linux's ``/proc/stat``; None where that cannot be read (another OS)."""
    cpus = {f"cpu{i}" for i in os.sched_getaffinity(0)} if hasattr(os, "sched_getaffinity") \
        else None

    def sample():
        idle = total = 0.0
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name != "cpu" and (cpus is None or name in cpus):
                    values = [float(v) for v in fields[:8]]
                    idle += values[3] + values[4]              # idle + iowait
                    total += sum(values)
        return idle, total

    try:
        idle0, total0 = sample()
        time.sleep(interval)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    n = len(cpus) if cpus else (os.cpu_count() or 1)
    return n * (idle1 - idle0) / (total1 - total0) if total1 > total0 else None


def kernel_env() -> dict[str, str]:
    """The environment of a chapter's kernel: :data:`MALLOC_ENV`, and OpenMP's wait policy.

    A chapter computes with :func:`book_threads` threads, and by default OpenMP's idle threads
    spin between parallel regions. On a machine where another process holds one of the cores,
    the spinning thread steals time from the one doing the work and every parallel region waits
    for a preempted partner (the book once took 40 minutes instead of 4 that way); passive
    threads sleep instead. But waking a sleeping thread costs time at every parallel region:
    on an idle machine passive waits make the chapters' convolutional training nearly twice as
    slow. So: passive waits when fewer cores are idle than the chapters use (or when that cannot
    be measured), OpenMP's default otherwise (benchmarks/bench_busy_core.py times each policy
    on an idle and on a busy machine). Neither changes a result. A value the user set already is kept by the callers.
    """
    env = dict(MALLOC_ENV)
    free = idle_cores()
    if free is None or free < book_threads() - 0.5:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


#: Cell tags that stop nbval from comparing a cell's outputs.
IGNORE_TAGS = ("nbval-ignore-output", "nbval-skip")

#: The look of every figure in the book (applied by :func:`setup_notebook`).
RC_PARAMS = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "image.cmap": "gray",
    "image.interpolation": "nearest",   # pixels stay pixels: dSprites is binary
    "lines.linewidth": 1.8,
}

COLAB_BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"


# ---------------------------------------------------------------------------------------------
# The setup cell
# ---------------------------------------------------------------------------------------------

def in_colab() -> bool:
    """True inside Google Colab (its runtime module is imported before any user code)."""
    return "google.colab" in sys.modules


def setup_notebook(seed: int = 0) -> torch.device:
    """Make a notebook reproducible and quiet; return the device to compute on.

    * seeds ``random``, ``numpy`` and ``torch`` with ``seed``;
    * figures are emitted as PNG only (nbval ignores PNG bytes; SVG would be compared as text and
      differs from one matplotlib version to the next) and share one look (:data:`RC_PARAMS`);
    * progress bars are off (``BVAE_PROGRESS=0``, ``TQDM_DISABLE=1``) unless in Colab, where a
      reader likes to see a long run advance; set ``BVAE_PROGRESS=1`` yourself to see them locally;
    * warnings are *not* silenced: the chapters remove their causes instead (a warning is
      stderr, which ``python -m bvae_lib.book execute`` refuses to store, so a new one is caught
      there); only matplotlib's logger is quietened to errors (its font-cache messages);
    * torch, BLAS and OpenMP compute with :data:`BOOK_THREADS` threads (the environment variable
      ``BVAE_BOOK_THREADS`` overrides it), so the stored outputs are reproduced on a machine with
      any number of cores (the same CPU family rounds the same way; another may differ in the
      last digits after training);
    * returns ``cuda`` when a CUDA GPU is visible (Colab), else ``cpu``. Apple's MPS is not chosen:
      the chapters' numbers are tested on CPU and CUDA only.
    """
    if not is_int(seed):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

    if not in_colab():
        os.environ.setdefault("BVAE_PROGRESS", "0")
        if os.environ["BVAE_PROGRESS"] == "0":
            os.environ["TQDM_DISABLE"] = "1"

    import logging
    logging.getLogger("matplotlib").setLevel(logging.ERROR)

    _set_threads(book_threads())
    _setup_matplotlib()
    np.set_printoptions(precision=4, suppress=True)
    torch.set_printoptions(precision=4, sci_mode=False)

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def book_threads() -> int:
    """The chapters' thread count: :data:`BOOK_THREADS`, or the environment's ``BVAE_BOOK_THREADS``."""
    raw = os.environ.get("BVAE_BOOK_THREADS", str(BOOK_THREADS))
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"BVAE_BOOK_THREADS must be a positive integer, got {raw!r}")
    return n


def _set_threads(n: int) -> None:
    torch.set_num_threads(n)
    try:                                 # numpy/scipy/scikit-learn's BLAS and OpenMP pools
        from threadpoolctl import threadpool_limits
    except ImportError:                  # pragma: no cover - scikit-learn brings it
        return
    threadpool_limits(limits=n)


def _setup_matplotlib() -> None:
    import matplotlib
    try:
        from IPython import get_ipython
        ip = get_ipython()
    except ImportError:  # plain Python: no display hooks to configure
        ip = None
    if ip is not None and getattr(ip, "kernel", None) is not None:
        # Activate the inline backend now (rcParams below win afterwards). Importing pyplot is
        # not enough: matplotlib resolves its backend lazily, at the first pyplot figure, and
        # until then IPython has no PNG printer for a Figure -- a chapter whose first figure is
        # a bvae_lib.viz Figure (made without pyplot) would store "<Figure ...>" text only.
        ip.run_line_magic("matplotlib", "inline")
        ip.run_line_magic("config", "InlineBackend.figure_formats = ['png']")
    matplotlib.rcParams.update(RC_PARAMS)


# ---------------------------------------------------------------------------------------------
# Where things are: the book root, its configuration, its chapters
# ---------------------------------------------------------------------------------------------

def find_book_root(start: str | os.PathLike | None = None) -> Path:
    """The directory holding ``_config.yml`` and ``_toc.yml``: ``start`` or its nearest parent,
    else the repository this package was installed from (editable install)."""
    candidates = []
    here = Path(start or Path.cwd()).resolve()
    candidates += [here, *here.parents]
    candidates.append(Path(__file__).resolve().parent.parent)
    for c in candidates:
        if (c / "_config.yml").is_file() and (c / "_toc.yml").is_file():
            return c
    raise FileNotFoundError(
        f"no book root (a directory with _config.yml and _toc.yml) at or above {here}; "
        f"run this command from the bvae-book repository")


def read_config(root: str | os.PathLike | None = None) -> dict:
    """``_config.yml`` as a dict."""
    import yaml
    root = find_book_root(root) if root is None else Path(root)
    with open(root / "_config.yml", encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def repository_url(config: dict) -> tuple[str, str, str]:
    """``(url, branch, path_to_book)`` from the ``repository`` section of ``_config.yml``."""
    repo = config.get("repository") or {}
    url = str(repo.get("url", "")).rstrip("/")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise ValueError(f"_config.yml: repository.url must be https://github.com/OWNER/NAME, "
                         f"got {url!r}")
    return url, str(repo.get("branch", "main")), str(repo.get("path_to_book", "."))


def _toc_files(node) -> list[str]:
    out = []
    if isinstance(node, dict):
        for key in ("root", "file"):
            if isinstance(node.get(key), str):
                out.append(node[key])
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key) or []:
                out += _toc_files(child)
    elif isinstance(node, list):
        for child in node:
            out += _toc_files(child)
    return out


def toc_notebooks(root: str | os.PathLike | None = None) -> list[Path]:
    """The notebooks listed in ``_toc.yml``, in reading order."""
    import yaml
    root = find_book_root(root) if root is None else Path(root)
    with open(root / "_toc.yml", encoding="utf-8") as f:
        toc = yaml.safe_load(f)
    paths = []
    for entry in _toc_files(toc):
        p = root / entry
        if p.suffix == "":
            p = p.with_suffix(".ipynb")
        if p.suffix == ".ipynb" and p.is_file():
            paths.append(p)
    return paths


def colab_badge(notebook: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """The Markdown of the "Open in Colab" badge for ``notebook`` (a path inside the book)."""
    root = find_book_root(root) if root is None else Path(root)
    url, branch, path_to_book = repository_url(read_config(root))
    rel = Path(notebook).resolve().relative_to(root.resolve())
    in_repo = (Path(path_to_book) / rel).as_posix()
    in_repo = re.sub(r"^(\./)+", "", in_repo)
    owner_name = url.removeprefix("https://github.com/")
    target = f"https://colab.research.google.com/github/{owner_name}/blob/{branch}/{in_repo}"
    return f"[![Open In Colab]({COLAB_BADGE_IMAGE})]({target})"


def setup_cell_source(root: str | os.PathLike | None = None) -> str:
    """The exact source of every chapter's second cell (the install URL comes from _config.yml)."""
    url, _, _ = repository_url(read_config(root))
    return (
        '# Setup: in Colab, install bvae_lib from the book\'s repository; elsewhere this does nothing.\n'
        'import sys\n'
        'if "google.colab" in sys.modules:\n'
        f'    %pip install -q "bvae-lib[vision,notebook] @ git+{url}"\n'
        'from bvae_lib.book import setup_notebook\n'
        'device = setup_notebook(seed=0)'
    )


# ---------------------------------------------------------------------------------------------
# Where outputs come from: the environment record every executed notebook carries
# ---------------------------------------------------------------------------------------------

def environment_record() -> dict:
    """What decides a chapter's numbers in this environment: the versions of
    :data:`RECORDED_PACKAGES`, torch's CPU kernels (``ATEN_CPU_CAPABILITY``), the arithmetic
    the training loop uses on this CPU (``bf16`` where it has bf16 instructions, else ``fp32``),
    the BLAS libraries' core types, the chapters' thread count, the Python version and the
    processor architecture."""
    import platform
    from importlib.metadata import PackageNotFoundError, version
    from threadpoolctl import threadpool_info

    packages = {}
    for name in RECORDED_PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    blas = sorted({f"{p['internal_api']} {p.get('architecture') or '?'}"
                   for p in threadpool_info() if p.get("user_api") == "blas"})
    from bvae_lib.train import TrainConfig, precision

    return {"packages": packages,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            # the arithmetic of the chapters' training runs on the CPU (bf16 where it is native)
            "training_precision": precision(TrainConfig(steps=1), torch.device("cpu")),
            "blas": blas,
            "threads": book_threads(),
            "python": ".".join(platform.python_version_tuple()[:2]),
            "machine": platform.machine()}


def record_differences(recorded: dict | None, current: dict | None = None) -> list[str]:
    """How the environment a notebook was executed in (``recorded``) differs from ``current``
    (default: this one), one readable line per difference; [] when they agree."""
    if not recorded:
        return ["no environment record (execute it with python -m bvae_lib.book execute)"]
    current = environment_record() if current is None else current
    out = []
    rec_pk, cur_pk = recorded.get("packages", {}), current.get("packages", {})
    for name in sorted(set(rec_pk) | set(cur_pk)):
        if rec_pk.get(name) != cur_pk.get(name):
            out.append(f"{name} {rec_pk.get(name)} when executed, {cur_pk.get(name)} here")
    for key in ("torch_cpu_capability", "training_precision", "blas", "threads", "python",
                "machine"):
        if recorded.get(key) != current.get(key):
            out.append(f"{key} {recorded.get(key)} when executed, {current.get(key)} here")
    return out


# ---------------------------------------------------------------------------------------------
# execute: regenerate stored outputs
# ---------------------------------------------------------------------------------------------

KERNEL_NAME = "bvae-current-env"

#: What the stored notebook says about its kernel: fixed, so that executing on another machine
#: or Python patch release does not change the file. "python3" is what Colab and Jupyter expect.
STORED_KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python",
                     "name": "python3"}
STORED_LANGUAGE_INFO = {"codemirror_mode": {"name": "ipython", "version": 3},
                        "file_extension": ".py", "mimetype": "text/x-python", "name": "python",
                        "nbconvert_exporter": "python", "pygments_lexer": "ipython3"}


def _current_env_kernel_spec():
    from jupyter_client.kernelspec import KernelSpec
    # The kernel's own log (e.g. ipykernel's note about TCP transport) is not the notebook's
    # business: errors inside cells still reach the notebook as error outputs.
    return KernelSpec(
        argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
              "--IPKernelApp.log_level=ERROR"],
        display_name=f"Python ({sys.executable})", language="python",
        resource_dir=str(Path(__file__).parent))


def _kernel_manager_class():
    """A kernel manager class whose kernel is ``sys.executable -m ipykernel_launcher``.

    Passed to nbclient as ``kernel_manager_class`` (not as an instance), so that nbclient owns
    the kernel and shuts it down when the notebook is done.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from traitlets import default

    class CurrentEnvKernelSpecManager(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return _current_env_kernel_spec()

        def find_kernel_specs(self):
            return {KERNEL_NAME: str(Path(__file__).parent)}

    class CurrentEnvKernelManager(KernelManager):
        @default("kernel_spec_manager")
        def _kernel_spec_manager_default(self):
            return CurrentEnvKernelSpecManager()

    return CurrentEnvKernelManager


class NotebookExecutionError(RuntimeError):
    """A notebook failed: a cell raised, timed out, or wrote to stderr."""


def _stderr_outputs(nb) -> list[tuple[int, str]]:
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                found.append((i, out.get("text", "")))
            elif out.get("output_type") == "error":
                found.append((i, f"{out.get('ename')}: {out.get('evalue')}"))
    return found


def normalise_notebook(nb) -> None:
    """Strip what changes from run to run without meaning anything (in place)."""
    nb.metadata["kernelspec"] = dict(STORED_KERNELSPEC)
    nb.metadata["language_info"] = dict(STORED_LANGUAGE_INFO)
    nb.metadata.pop("widgets", None)          # widget state: random model ids, huge
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # nbclient's timestamps
        cell.metadata.pop("collapsed", None)
        cell.metadata.pop("scrolled", None)
        if cell.cell_type == "code":
            cell.outputs = _clean_outputs(cell.outputs)


def _clean_outputs(outputs: list) -> list:
    """Merge consecutive stream outputs (how a print is split depends on timing) and drop widget
    views (they cannot render without the stripped widget state, and their ids are random)."""
    cleaned = []
    for out in outputs:
        data = out.get("data")
        if data is not None and "application/vnd.jupyter.widget-view+json" in data:
            continue
        if (out.get("output_type") == "stream" and cleaned
                and cleaned[-1].get("output_type") == "stream"
                and cleaned[-1].get("name") == out.get("name")):
            cleaned[-1]["text"] = cleaned[-1]["text"] + out["text"]
            continue
        cleaned.append(out)
    return cleaned


def execute_notebook(path: str | os.PathLike, timeout: int = 300, write: bool = True):
    """Execute ``path`` top to bottom on the CPU in this interpreter's kernel; store its outputs.

    Raises :class:`NotebookExecutionError` (and leaves the file untouched) when a cell raises,
    exceeds ``timeout`` seconds, or writes anything to stderr. Returns the executed notebook.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"notebook not found: {path}")
    nb = nbformat.read(path, as_version=4)
    # The kernel inherits this environment: hide GPUs (outputs are the CPU's), no progress bars.
    kernel_env_ = {k: os.environ.get(k, v) for k, v in kernel_env().items()}
    kernel_env_.update(CUDA_VISIBLE_DEVICES="", BVAE_PROGRESS="0", TQDM_DISABLE="1",
                       PYDEVD_DISABLE_FILE_VALIDATION="1")
    env_backup = {k: os.environ.get(k) for k in kernel_env_}
    os.environ.update(kernel_env_)
    client = NotebookClient(nb, kernel_manager_class=_kernel_manager_class(),
                            kernel_name=KERNEL_NAME, timeout=timeout, allow_errors=False,
                            record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except CellTimeoutError as e:
        raise NotebookExecutionError(f"{path.name}: a cell ran longer than {timeout} s "
                                     f"(raise --timeout or make the cell cheaper)\n{e}") from e
    except CellExecutionError as e:
        raise NotebookExecutionError(f"{path.name}: a cell raised; the file was not "
                                     f"changed.\n{e}") from e
    finally:
        for k, v in env_backup.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    bad = _stderr_outputs(nb)
    if bad:
        shown = "\n".join(f"  cell {i}: {text.strip()[:500]}" for i, text in bad)
        raise NotebookExecutionError(
            f"{path.name}: {len(bad)} cell(s) wrote to stderr; stored outputs must be clean "
            f"(silence the warning or fix its cause). The file was not changed.\n{shown}")
    normalise_notebook(nb)
    nb.metadata[RECORD_KEY] = environment_record()
    if write:
        nbformat.write(nb, path)
    return nb


# ---------------------------------------------------------------------------------------------
# check: what nbval, Colab and the HTML book rely on
# ---------------------------------------------------------------------------------------------

@dataclass
class CheckReport:
    """What :func:`check_notebook` found in one notebook."""
    path: Path
    problems: list[str] = field(default_factory=list)
    code_cells: int = 0
    compared_cells: int = 0
    #: How the environment the outputs were made in differs from this one (not a failure: the
    #: compared outputs are meant to hold on any CPU; these say where to look if one does not).
    environment_differences: list[str] = field(default_factory=list)

    @property
    def compared_fraction(self) -> float:
        return self.compared_cells / self.code_cells if self.code_cells else 1.0

    @property
    def ok(self) -> bool:
        return not self.problems


def _is_ignored(cell) -> bool:
    tags = cell.get("metadata", {}).get("tags", [])
    if any(t in tags for t in IGNORE_TAGS):
        return True
    first = cell.get("source", "").lstrip().splitlines()[:1]
    return bool(first) and first[0].strip().upper() in ("# NBVAL_IGNORE_OUTPUT", "# NBVAL_SKIP")


def _output_problems(cell) -> list[str]:
    """What is wrong with a code cell's stored outputs: errors, stderr, SVG figures, HTML with
    random ids (nbval would compare them)."""
    problems = []
    for out in cell.get("outputs", []):
        kind = out.get("output_type")
        if kind == "error":
            problems.append(f"stored error {out.get('ename')}: {out.get('evalue')}")
        elif kind == "stream" and out.get("name") == "stderr":
            problems.append(f"stored stderr: {out.get('text', '').strip()[:200]!r}")
        data = out.get("data", {})
        if "image/svg+xml" in data:
            problems.append("SVG output (figures must be PNG: call setup_notebook)")
        html = data.get("text/html", "")
        if isinstance(html, list):
            html = "".join(html)
        if re.search(r"[0-9a-f]{32}", html):
            problems.append("HTML output with a random-looking id; nbval would compare it (use "
                            "bvae_lib.viz.animate_traversal, which is deterministic)")
    return problems


def check_notebook(path: str | os.PathLike, root: str | os.PathLike | None = None) -> CheckReport:
    """Check one notebook against the book's rules; return a :class:`CheckReport`."""
    import nbformat
    path = Path(path).resolve()
    root = find_book_root(path.parent) if root is None else Path(root)
    report = CheckReport(path)
    problems = report.problems
    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    if len(cells) < 2:
        problems.append("a chapter needs at least a title cell and the setup cell")
        return report

    first = cells[0]
    badge = colab_badge(path, root)
    if first.cell_type != "markdown":
        problems.append("cell 0 must be markdown: '# N. Title', the Colab badge, the question")
    elif badge not in first.source:
        found = re.findall(r"https://colab\.research\.google\.com/github/\S+?\.ipynb", first.source)
        problems.append(f"cell 0 must contain the Colab badge {badge}"
                        + (f" (found a badge pointing at {found[0]})" if found else ""))
    elif not first.source.lstrip().startswith("# "):
        problems.append("cell 0 must start with the chapter title '# N. Title'")

    setup = cells[1]
    expected = setup_cell_source(root)
    if setup.cell_type != "code" or setup.source.strip() != expected:
        problems.append("cell 1 must be exactly the setup cell (bvae_lib.book.setup_cell_source())"
                        ":\n" + expected)

    for i, cell in enumerate(cells):
        if cell.cell_type != "code":
            continue
        if not cell.source.strip():
            problems.append(f"cell {i}: empty code cell")
            continue
        report.code_cells += 1
        if not _is_ignored(cell):
            report.compared_cells += 1
        if cell.get("execution_count") is None:
            problems.append(f"cell {i}: never executed (run python -m bvae_lib.book execute)")
        problems += [f"cell {i}: {p}" for p in _output_problems(cell)]
    recorded = nb.metadata.get(RECORD_KEY)
    if not recorded:
        problems.append("no environment record in the notebook's metadata (store outputs only "
                        "with python -m bvae_lib.book execute)")
    else:
        report.environment_differences = record_differences(recorded)
    if report.code_cells and report.compared_fraction < MIN_COMPARED_FRACTION:
        problems.append(f"only {report.compared_cells}/{report.code_cells} code cells "
                        f"({report.compared_fraction:.0%}) are compared by nbval; at least "
                        f"{MIN_COMPARED_FRACTION:.0%} must be (fewer nbval-ignore-output tags)")
    return report


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def _notebooks(args_paths: list[str]) -> list[Path]:
    if args_paths:
        return [Path(p) for p in args_paths]
    paths = toc_notebooks()
    if not paths:
        raise SystemExit("no notebooks listed in _toc.yml")
    return paths


#: What the notebook runner imports beyond the library's own dependencies (the ``book`` extra).
BOOK_MODULES = ("nbformat", "nbclient", "jupyter_client", "traitlets", "yaml", "ipykernel")


def _missing_book_dependencies() -> list[str]:
    import importlib.util

    return [m for m in BOOK_MODULES if importlib.util.find_spec(m) is None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bvae_lib.book",
        description="Regenerate (execute) or verify (check) the book's notebooks. Without "
                    "NOTEBOOK arguments: every chapter in _toc.yml, in order.")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("execute", help="run notebooks on the CPU and store their outputs")
    ex.add_argument("notebooks", nargs="*", metavar="NOTEBOOK")
    ex.add_argument("--timeout", type=int, default=300, help="seconds per cell (default 300)")
    ck = sub.add_parser("check", help="verify badges, setup cells, stored outputs, nbval coverage")
    ck.add_argument("notebooks", nargs="*", metavar="NOTEBOOK")
    args = parser.parse_args(argv)
    missing = _missing_book_dependencies()
    if missing:
        print(f"error: python -m bvae_lib.book needs {', '.join(missing)}, which a plain install "
              f"of the library does not bring: pip install 'bvae-lib[book]' (or, in this "
              f"repository, make setup)", file=sys.stderr)
        return 2

    if args.command == "execute":
        for path in _notebooks(args.notebooks):
            t0 = time.perf_counter()
            print(f"executing {path} ...", flush=True)
            try:
                execute_notebook(path, timeout=args.timeout)
            except NotebookExecutionError as e:
                print(f"FAILED: {e}", file=sys.stderr, flush=True)
                return 1
            print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)
        return 0

    failed = 0
    for path in _notebooks(args.notebooks):
        rep = check_notebook(path)
        status = "ok" if rep.ok else "FAIL"
        print(f"{status:4s} {path}: {rep.compared_cells}/{rep.code_cells} code cells compared "
              f"({rep.compared_fraction:.0%})")
        for p in rep.problems:
            print(f"     - {p}")
        for d in rep.environment_differences:
            print(f"     note: executed in another environment: {d}")
        failed += not rep.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
