# Two commands do everything on a fresh machine with Python 3.11:
#   make book   -- set up .venv and build the HTML book into _build/html/index.html
#   make test   -- set up .venv and run every test: pytest tests/ and pytest --nbval book/
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOCK   := requirements.lock

.PHONY: setup book test test-lib test-book test-portable execute lock device-check clean

# The environment is the lock: exact versions of every package (requirements.lock, made from
# requirements.txt by `make lock`). The library itself is installed without its dependencies,
# so nothing outside the lock can enter; pyproject.toml keeps lower bounds for `pip install`.
$(BIN)/activate: $(LOCK) pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(BIN)/activate

setup: $(BIN)/activate

book: setup
	$(BIN)/jupyter-book build . --warningiserror --keep-going

# The library's tests run on TEST_WORKERS processes (pytest-xdist), each with one torch thread
# (tests/conftest.py) and one BLAS/OpenMP thread, so that the workers do not oversubscribe the
# cores. The chapters run one at a time: each pins its own thread count (bvae_lib.book), and
# book/conftest.py makes idle OpenMP threads sleep instead of spinning.
TEST_WORKERS ?= 2

test: test-lib test-book

test-lib: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup tests/

test-book: setup
	$(BIN)/python -m pytest --nbval book/

# The chapters' stored outputs, checked as if on a CPU of another family: torch's generic
# (non-vectorised) kernels and an older OpenBLAS kernel set compute every sum in another order.
# Passing here means no compared output depends on the last bits of this machine's arithmetic.
test-portable: setup
	ATEN_CPU_CAPABILITY=default OPENBLAS_CORETYPE=Sandybridge $(BIN)/python -m pytest --nbval book/

# On a machine with one CUDA GPU: the GPU tests, the data and training benchmarks on the device,
# a 20,000-step beta = 4 run and its scores, recorded in benchmarks/results/device_*.json (<= 8 min).
device-check: setup
	$(BIN)/python benchmarks/device_check.py

# Re-execute every chapter on the CPU, in order, and store its outputs (never edit by hand).
execute: setup
	$(BIN)/python -m bvae_lib.book execute

# Regenerate the lock from requirements.txt with pip-tools' pip-compile, in a throw-away venv;
# then run `make execute` so that the stored outputs are made under the new lock. pip-compile
# does not read pip's configured constraints: where the machine caps a package (this project's
# machines keep torch 2.14.1 on disk and cap pip at it, /etc/xdg/pip), the cap is passed on.
LOCK_CONSTRAINTS ?= $(wildcard /etc/xdg/pip/constraints.txt)
PIP_TOOLS := pip-tools==7.6.2
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet $(PIP_TOOLS)
	CUSTOM_COMPILE_COMMAND="make lock" .venv-lock/bin/pip-compile --quiet --upgrade \
	  --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
	  $(addprefix --constraint=,$(LOCK_CONSTRAINTS)) --output-file $(LOCK) requirements.txt
	rm -rf .venv-lock

clean:
	rm -rf _build
