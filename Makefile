# The two commands a newcomer types: `make up` (run the platform and a demo job) and `make test`.
# Everything installs into .venv, idempotently; tox.ini mirrors these targets for tox users.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: up down test test-rabbitmq test-unit lint bench protos clean

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

RABBITMQ_URL ?= amqp://guest:guest@127.0.0.1:5672//
BROKER_SUITES := tests/integration/test_e2e.py tests/integration/test_reliability.py tests/integration/test_approvals.py tests/integration/test_workflows.py

## test: lint, the whole pytest suite (its own redis-server on a free port), then the broker-facing
## integration suites again on RabbitMQ when one answers at RABBITMQ_URL (state stays in Redis)
test: $(STAMP) lint
	$(BIN)/pytest -q
	@if $(BIN)/python -c "import kombu,sys; c=kombu.Connection('$(RABBITMQ_URL)', connect_timeout=3); c.ensure_connection(max_retries=1); c.release()" 2>/dev/null; then \
	  echo "== the same integration suites with RabbitMQ as the broker ($(RABBITMQ_URL))"; \
	  CORETEX_TEST_BROKER_URL=$(RABBITMQ_URL) $(BIN)/pytest -q $(BROKER_SUITES); \
	else echo "== no RabbitMQ answers at $(RABBITMQ_URL): the RabbitMQ pass did not run (make test-rabbitmq)"; fi

## test-rabbitmq: only the broker-facing integration suites, on RabbitMQ
test-rabbitmq: $(STAMP)
	CORETEX_TEST_BROKER_URL=$(RABBITMQ_URL) $(BIN)/pytest -q $(BROKER_SUITES)

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
	for b in bench/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

## protos: regenerate coretex/agent/v1 from coretex/protocol/proto (a test fails on drift)
protos: $(STAMP)
	$(BIN)/python tools/genproto.py

clean: down
	rm -rf $(VENV) .coretex .pytest_cache .mypy_cache .ruff_cache
