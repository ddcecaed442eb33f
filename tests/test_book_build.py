"""The HTML book builds with no Sphinx warning (CI runs this as part of `make test`)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_html_book_builds_without_warnings(tmp_path):
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", str(ROOT), "--path-output", str(tmp_path),
                           "--warningiserror", "--keep-going", "--all"],
                          capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    html = tmp_path / "_build" / "html"
    assert (html / "index.html").is_file()
    chapters = sorted(p.stem for p in (ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
    missing = [c for c in chapters if not (html / "book" / f"{c}.html").is_file()]
    assert not missing, f"chapters missing from the HTML book (add them to _toc.yml): {missing}"
