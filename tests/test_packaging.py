"""The package that Colab's setup cell installs is complete.

Every chapter's setup cell runs ``pip install "bvae-lib[vision,notebook] @ git+<repository>"``.
We cannot reach the repository from here, so we run the same requirement against this checkout
(a local path instead of the git URL) and check what it would install.
"""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_setup_cell_requirement_builds_a_wheel_with_every_module(tmp_path):
    requirement = f"bvae-lib[vision,notebook] @ {ROOT.as_uri()}"
    # No build isolation: the build backend (setuptools) is already in this environment and CI
    # must not depend on fetching it.
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "--wheel-dir", str(tmp_path), requirement],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheels = list(tmp_path.glob("bvae_lib-*.whl"))
    assert len(wheels) == 1, list(tmp_path.iterdir())
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "bvae_lib").rglob("*.py")}
    missing = modules - names
    assert not missing, f"the installed package would lack {sorted(missing)}"
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "bvae_lib").rglob("*")
               if p.is_file() and p.suffix not in (".py", ".pyc")}
    assert not (shipped - names), f"package data missing from the wheel: {sorted(shipped - names)}"


# import name -> distribution, where they differ
DISTRIBUTION = {"sklearn": "scikit-learn", "yaml": "pyyaml", "IPython": "ipython",
                "jupyter_client": "jupyter-client"}
# the extras a module may use, beyond the core dependencies (optional imports inside functions,
# each with an ImportError that names the extra)
EXTRAS_OF = {"bvae_lib/book.py": ("book", "notebook"), "bvae_lib/viz.py": ("notebook",),
             "bvae_lib/data.py": ("vision",)}


def _declared():
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = lambda req: re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower()   # noqa: E731
    core = {name(r) for r in project["dependencies"]}
    extras = {k: {name(r) for r in v} for k, v in project["optional-dependencies"].items()}
    return core, extras


def test_every_module_imports_only_what_is_declared_for_it():
    import ast

    core, extras = _declared()
    problems = []
    for path in sorted((ROOT / "bvae_lib").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        allowed = set(core).union(*(extras[e] for e in EXTRAS_OF.get(rel, ())))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names}:
                if top in sys.stdlib_module_names or top == "bvae_lib":
                    continue
                dist = DISTRIBUTION.get(top, top).lower()
                if dist not in allowed:
                    problems.append(f"{rel}:{node.lineno} imports {top} ({dist}), declared for "
                                    f"it: core + {list(EXTRAS_OF.get(rel, ()))}")
    assert not problems, "\n".join(problems)


def test_the_book_runner_names_its_extra_when_it_is_missing(monkeypatch, capsys):
    from bvae_lib import book

    monkeypatch.setattr(book, "_missing_book_dependencies", lambda: ["nbclient"])
    assert book.main(["check"]) == 2
    assert "pip install 'bvae-lib[book]'" in capsys.readouterr().err
