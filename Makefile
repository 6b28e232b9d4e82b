# airflow-nevermined-fl: `make demo` runs one real FL session through Airflow; `make test` runs the suite;
# `make test-fast` only the tests that need no service, no FL venv and no Node (tests/tiers.py).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEVCHAIN := docker/devchain

.PHONY: setup test test-fast demo down lint clean

FAST_TIER := not (chain or s3 or airflow or docker or browser or k8s or runtime)

$(BIN)/nvfl: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

$(DEVCHAIN)/node_modules/.package-lock.json: $(DEVCHAIN)/package.json $(DEVCHAIN)/package-lock.json
	cd $(DEVCHAIN) && npm ci --no-audit --no-fund
	touch $@

setup: $(BIN)/nvfl $(DEVCHAIN)/node_modules/.package-lock.json
	$(BIN)/nvfl contracts compile
	$(BIN)/nvfl runtime install

test: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest

test-fast: $(BIN)/nvfl
	$(BIN)/pytest -m "$(FAST_TIER)"

demo: setup
	$(BIN)/nvfl demo

down:
	$(BIN)/nvfl devstack down

lint: $(BIN)/nvfl
	$(BIN)/ruff check .
	$(BIN)/lint-imports
