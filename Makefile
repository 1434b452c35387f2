# Two commands for a fresh machine: `make run` (workflow end to end) and `make test`.
# Both create the isolated environment .venv first (Python >= 3.11, pip).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kryflow-installed
SOLVERS := $(VENV)/.kryflow-solvers
EXTRAS := $(VENV)/.kryflow-solver-extras
CONFIG ?= config/config.yaml

.PHONY: run test test-fast test-slurm lint dryrun-paper clean-results venv system-deps solver-system-deps solver-extras

venv: $(STAMP) $(EXTRAS)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the exact pin resolves to the local CPU wheel here and to the CUDA build on a GPU node
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# the default workflow solves with CHOLMOD where `auto` picks it and compares PARDISO in its solver
# benchmark: the solver extras come first (never fatal; without them `auto` takes LU or Jacobi-PCG)
run: $(STAMP) $(SOLVERS)
	$(BIN)/snakemake --cores all --configfile $(CONFIG)
	$(BIN)/kryflow where

# System packages some tests use (PostgreSQL for the MLflow server test, Chromium for the UI
# test) and the solver extras build on (SuiteSparse's headers for scikit-sparse, OpenBLAS for
# CHOLMOD's supernodal kernels). Installed when missing and possible (root with apt-get);
# otherwise those tests skip and say why.
system-deps: solver-system-deps
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql chromium >/dev/null; \
	  else echo "note: postgresql/chromium missing and not root: their tests will skip"; fi; \
	fi

# The solver extras' system packages alone (what `make run` needs of them).
solver-system-deps:
	@if [ ! -e /usr/include/suitesparse/cholmod.h ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      libsuitesparse-dev libopenblas0-pthread >/dev/null \
	      || echo "note: libsuitesparse-dev did not install: CHOLMOD will be absent"; \
	  else echo "note: libsuitesparse-dev missing and not root: CHOLMOD will be absent (auto takes LU or Jacobi-PCG)"; fi; \
	fi

# The optional solver baselines (CHOLMOD through scikit-sparse, MKL PARDISO through pypardiso),
# after the system packages so that scikit-sparse finds SuiteSparse's headers. Never fatal:
# where they do not install, their methods report themselves absent and their tests and
# benchmark rows skip.
$(SOLVERS): $(STAMP) pyproject.toml | solver-system-deps
	$(BIN)/python -m pip install --quiet -e ".[solvers]" \
	  || echo "note: solver extras (scikit-sparse, pypardiso) absent: auto takes LU or Jacobi-PCG where it would take CHOLMOD; their tests and benchmark rows skip"
	touch $(SOLVERS)

# make test adds neuraloperator's models (the neuralop extra); never fatal either: the neuralop_*
# entries say so at config time and their tests skip.
$(EXTRAS): $(SOLVERS) pyproject.toml | system-deps
	$(BIN)/python -m pip install --quiet -e ".[neuralop]" \
	  || echo "note: neuraloperator absent: the neuralop_* models say so and their tests skip"
	touch $(EXTRAS)

solver-extras: $(EXTRAS)

test: $(STAMP) system-deps $(EXTRAS)
	$(BIN)/python -m pytest

test-slurm: $(STAMP)
	$(BIN)/python -m pytest tests/test_slurm.py -v

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/snakemake --lint

dryrun-paper: $(STAMP)
	$(BIN)/snakemake -n --configfile config/paper.yaml

clean-results:
	rm -rf results data/*.zarr mlflow.db mlartifacts logs .snakemake
