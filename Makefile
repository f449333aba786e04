# The two commands a new user needs: `make demo` and `make test`. Both create .venv when it is missing.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DATA := data/generated/default
MODEL := models:/selfretail-feed@champion
LOADED := .feed/default-world.loaded
# implicit parallelizes ALS itself; a threaded BLAS underneath only oversubscribes the cores.
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: demo test install install-test data train serve bench clean

demo: install $(DATA)/events.parquet $(LOADED)  ## generate the default world once, load it into the store, train, register, serve on :8000
	$(BIN)/feed train --data $(DATA) --out artifacts/default
	$(BIN)/feed serve --model $(MODEL) --host 127.0.0.1 --port 8000

test: install-test  ## run the whole test suite
	$(BIN)/python -m pytest

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned, so that no dependency resolves to the several-GB CUDA build.
$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

data: $(DATA)/events.parquet
$(DATA)/events.parquet: | $(VENV)/.installed
	$(BIN)/feed generate --out $(DATA)

# The demo's event store holds the world's events, so creator stats, the ledger and the dashboard have data.
$(LOADED): $(DATA)/events.parquet | $(VENV)/.installed
	$(BIN)/feed db load --data $(DATA) --with-events
	touch $@

train: install data
	$(BIN)/feed train --data $(DATA) --out artifacts/default

serve: install
	$(BIN)/feed serve --model $(MODEL)

bench: install  ## print the numbers recorded in BENCHMARKS.md
	$(BIN)/python benchmarks/bench_foundation.py

clean:  ## remove generated data, bundles and the MLflow store (keeps .venv)
	rm -rf data/generated artifacts .mlflow .feed
