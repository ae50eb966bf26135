# Verdict: the two commands of the README, and the few helpers behind them.
# Everything installs from the lock files; nothing is fetched at run time.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint bench lock clean

## make run: create the virtualenv from the lock, then start the decision
## service on embedded defaults (on first start it trains, registers and
## promotes the reference model, generates a dev signing key and API key,
## and prints a working example request).
run: $(VENV)/.runtime-installed
	$(BIN)/verdict serve

## make test: lint, format and type checks, then the whole test suite (what CI runs),
## in two worker processes (a whole test file per worker: its fixtures stay shared; most
## tests wait on servers and subprocesses, so two workers fit a 2-core machine).
test: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

## make lint: ruff (lint and format check) and mypy, as pinned in the dev lock.
lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	VENV=$(VENV) bash scripts/typecheck.sh

bench: $(VENV)/.dev-installed
	$(BIN)/python benchmarks/run_all.py

$(VENV)/.runtime-installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.runtime-installed requirements-dev.lock
	$(BIN)/python -m pip install --quiet -r requirements-dev.lock
	touch $@

## make lock: regenerate both locks from pyproject.toml in throwaway venvs.
lock:
	bash scripts/lock.sh

clean:
	rm -rf $(VENV) var
