# airflow-nevermined-fl: `make demo` runs one real FL session through Airflow; `make test` runs the suite.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEVCHAIN := docker/devchain

.PHONY: setup test demo down lint clean

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

demo: setup
	$(BIN)/nvfl demo

down:
	$(BIN)/nvfl devstack down

lint: $(BIN)/nvfl
	$(BIN)/ruff check .
	$(BIN)/lint-imports
