# Two commands do everything on a fresh machine with Python 3.11:
#   make book   -- set up .venv and build the HTML book into _build/html/index.html
#   make test   -- set up .venv and run every test: pytest tests/ and pytest --nbval book/
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup book test test-lib test-book execute clean

$(BIN)/activate: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -e .
	touch $(BIN)/activate

setup: $(BIN)/activate

book: setup
	$(BIN)/jupyter-book build . --warningiserror --keep-going

# The library's tests run on TEST_WORKERS processes (pytest-xdist), each with one torch thread
# (tests/conftest.py) and one BLAS/OpenMP thread, so that the workers do not oversubscribe the
# cores. The chapters run one at a time: each pins its own thread count (bvae_lib.book).
TEST_WORKERS ?= 2

test: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) tests/
	$(BIN)/python -m pytest --nbval book/

# Re-execute every chapter on the CPU, in order, and store its outputs (never edit by hand).
execute: setup
	$(BIN)/python -m bvae_lib.book execute

clean:
	rm -rf _build
