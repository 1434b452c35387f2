# Two commands for a fresh machine: `make run` (workflow end to end) and `make test`.
# Both create the isolated environment .venv first (Python >= 3.11, pip).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kryflow-installed
CONFIG ?= config/config.yaml

.PHONY: run test test-fast lint dryrun-paper clean-results venv

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

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/snakemake --lint

dryrun-paper: $(STAMP)
	$(BIN)/snakemake -n --configfile config/paper.yaml

clean-results:
	rm -rf results data/*.zarr mlflow.db mlartifacts logs .snakemake
