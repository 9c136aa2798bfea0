# The two commands a new user needs: `make demo` and `make test`. Each sets itself up.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: test lint typecheck unit integration demo bench check-alerts check-dockerfile check-k8s clean

# (Re)install when pyproject.toml changes; a fresh clone gets the virtualenv here.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check consumer tests bench scripts
	$(BIN)/ruff format --check consumer tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# Unit tests first, then integration tests; the pytest session fixture starts the Kafka broker
# (scripts/kafka-local) unless KAFKA_BOOTSTRAP_SERVERS is set, and stops it even when tests fail.
test: lint typecheck check-alerts check-dockerfile check-k8s
	$(BIN)/python -m pytest tests/unit tests/integration

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

check-alerts:
	scripts/check-alerts

check-dockerfile: $(STAMP)
	scripts/check-dockerfile

# Builds every Kustomize overlay and validates it offline against the Kubernetes schemas.
check-k8s: $(STAMP)
	$(BIN)/python scripts/check-k8s

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

# Not part of `make test`: the service on the local broker against the emulator, one table
# (also written to bench/results.md). `make bench BENCH_ARGS=--quick` for a short smoke run.
bench: $(STAMP)
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
