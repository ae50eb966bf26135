# Verdict: the two commands of the README, and the few helpers behind them.
# Everything installs from the lock files; nothing is fetched at run time.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint browser bench lock clean

## make run: create the virtualenv from the lock, then start the decision
## service on embedded defaults (on first start it trains, registers and
## promotes the reference model, generates a dev signing key and API key,
## and prints a working example request).
run: $(VENV)/.runtime-installed
	$(BIN)/verdict serve

## make test: lint, format and type checks, then the whole test suite (what CI runs),
## in two worker processes (a whole test file per worker: its fixtures stay shared; most
## tests wait on servers and subprocesses, so two workers fit a 2-core machine).
test: lint browser
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

## make lint: ruff (lint and format check) and mypy, as pinned in the dev lock.
lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	VENV=$(VENV) bash scripts/typecheck.sh

## make browser: Debian's Chromium (and its driver) for the console's browser tests, from
## apt, only when /usr/bin/chromium is missing (sudo unless root); never fetched at test time.
## Without apt-get it only warns: the browser tests then skip, or fail where CI is set.
browser:
	@test -x /usr/bin/chromium || { \
	  if command -v apt-get >/dev/null; then \
	    sudo=$$(test "$$(id -u)" -eq 0 || echo sudo); \
	    $$sudo apt-get update -q && \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver; \
	  else \
	    echo "make browser: no apt-get; install Chromium as /usr/bin/chromium for the browser tests" >&2; \
	  fi; }

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
