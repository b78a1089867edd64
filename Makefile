# The two commands a newcomer types: `make up` (run the platform and a demo job) and `make test`.
# Everything installs into .venv, idempotently; tox.ini mirrors these targets for tox users.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: up down test test-unit lint bench protos clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "cannot create a virtualenv: install Python 3.11+ with venv (Debian: apt-get install python3-venv)"; exit 1; }
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

## up: start Redis (if none answers), kernel, control worker, beat, echo worker and gateway; run a demo job
up: $(STAMP)
	$(BIN)/coretex up

## down: stop exactly what `make up` started
down:
	@if [ -x $(BIN)/coretex ]; then $(BIN)/coretex down; else echo "nothing to stop (no .venv)"; fi

## test: lint, then the whole pytest suite (starts its own redis-server on a free port)
test: $(STAMP) lint
	$(BIN)/pytest -q

test-unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

## lint: ruff, mypy (strict on coretex/), import-linter contracts of the pure core
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## bench: every benchmark in bench/, each printing ratios against raw Celery on the same Redis
bench: $(STAMP)
	@ls bench/*.py >/dev/null 2>&1 || { echo "no benchmarks yet"; exit 0; }; \
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

## protos: regenerate coretex/agent/v1 from coretex/protocol/proto (a test fails on drift)
protos: $(STAMP)
	$(BIN)/python tools/genproto.py

clean: down
	rm -rf $(VENV) .coretex .pytest_cache .mypy_cache .ruff_cache
