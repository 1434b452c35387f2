# Two commands for a fresh machine: `make run` (workflow end to end) and `make test`.
# Both create the isolated environment .venv first (Python >= 3.11, pip).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kryflow-installed
CONFIG ?= config/config.yaml

.PHONY: run test test-fast test-slurm lint dryrun-paper clean-results venv system-deps

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the exact pin resolves to the local CPU wheel here and to the CUDA build on a GPU node
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores all --configfile $(CONFIG)
	$(BIN)/kryflow where

# System packages some tests use (PostgreSQL for the MLflow server test, Chromium for the UI
# test). Installed when missing and possible (root with apt-get); otherwise those tests skip
# and say why.
system-deps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql chromium >/dev/null; \
	  else echo "note: postgresql/chromium missing and not root: their tests will skip"; fi; \
	fi

test: $(STAMP) system-deps
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
