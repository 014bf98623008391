# The commands people type. `make dev` starts the whole stack; `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PY := .venv/bin/python
export DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/chat
SOURCES := libs/common/src libs/stomp/src libs/testing/src migrations/src services/gateway/src services/session-svc/src \
	services/message-svc/src services/outbox-relay/src services/ws-edge/src \
	dev/flairbit-stub/src scripts/stack.py scripts/images.py

.PHONY: help install dev up down status migrate test test-unit lint fmt keys bench bench-quick asyncapi \
	images compose-test

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

.venv/.installed: pyproject.toml uv.lock $(wildcard */*/pyproject.toml) $(wildcard */pyproject.toml)
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --all-packages --locked
	@touch $@

install: .venv/.installed ## install every package into .venv (uv workspace)

migrate: install ## create the database if missing and apply the SQL migrations
	$(PY) -m chat_migrations --create-db

dev: migrate ## run the whole stack in the foreground (Ctrl-C stops it)
	$(PY) scripts/stack.py dev

up: migrate ## start the whole stack in the background; returns once the gateway is ready
	$(PY) scripts/stack.py up

down: ## stop what `make up` started
	$(PY) scripts/stack.py down

status: ## show which parts of the stack run
	$(PY) scripts/stack.py status

keys: install ## create the development key pair (done by dev/up too)
	$(PY) scripts/stack.py keys

test: install ## run every test (unit, integration on PostgreSQL/RabbitMQ, e2e, browser, chaos)
	@scripts/test-tools.sh
	@# The unit tests in parallel (they share nothing). Then the e2e and browser suites in the
	@# background beside the integration suite (each has its own stacks, ports, databases, vhosts
	@# and Redis database), their output printed when they end. Then the chaos suite alone: it
	@# restarts PostgreSQL and RabbitMQ. The first failing part's exit status is make's (5, "no
	@# tests", included).
	@mkdir -p .run; rc=0; keep() { [ "$$rc" -ne 0 ] || rc=$$1; }; \
	$(PY) -m pytest -m unit -n auto || keep $$?; \
	$(PY) -m pytest -m e2e -p no:cacheprovider --basetemp=.run/pytest-e2e \
		>.run/test-e2e.log 2>&1 & e2e=$$!; \
	$(PY) -m pytest -m browser -p no:cacheprovider --basetemp=.run/pytest-browser \
		>.run/test-browser.log 2>&1 & browser=$$!; \
	$(PY) -m pytest -m integration || keep $$?; \
	for part in e2e browser; do \
		if [ $$part = e2e ]; then wait $$e2e; else wait $$browser; fi; r=$$?; \
		echo "== the $$part suite (run beside the above)"; cat .run/test-$$part.log; \
		[ "$$r" -eq 0 ] || keep $$r; \
	done; \
	$(PY) -m pytest -m chaos || keep $$?; \
	exit $$rc

test-unit: install ## the tests that need no server (pure code, stand-ins on loopback), in parallel
	$(PY) -m pytest -m unit -n auto -p no:cacheprovider

bench: install ## benchmark the stack against its baselines (not part of make test)
	@command -v rabbitmq-plugins >/dev/null 2>&1 && rabbitmq-plugins enable --quiet rabbitmq_web_stomp || true
	cd bench && ../$(PY) run.py $(BENCH_ARGS)

bench-quick: ## the benchmark's headline figures in under 3 minutes
	$(MAKE) bench BENCH_ARGS="--quick $(BENCH_ARGS)"

images: install ## build the seven images (chat/*:dev) from the Dockerfile; see docs/operations.md
	$(PY) scripts/images.py build $(IMAGES)

compose-test: install ## build the images, run docker-compose.yml, drive a conversation through it
	$(PY) -m pytest tests/compose -p no:cacheprovider $(PYTEST_ARGS)

# The tests are type-checked one folder at a time, each as the package `tests` of the folder above
# it (MYPYPATH and --explicit-package-bases), so that their relative imports resolve as under
# pytest. One run cannot take them all: they share module names (conftest, test_ratelimit), and
# most sit under folders whose names (ws-edge, message-svc) are not Python's. tests/ and the root
# conftest.py are checked from the root (modules tests.e2e.*, tests.deploy.*, ...); bench/ is the
# base of its scripts, which its tests import as top-level modules.
TEST_ROOTS := $(patsubst %/tests,%,$(wildcard libs/*/tests services/*/tests dev/*/tests))
MYPY_TESTS := .venv/bin/mypy --strict --explicit-package-bases

lint: install ## ruff; mypy --strict on the sources, every test folder and bench/
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy --strict $(SOURCES)
	$(MYPY_TESTS) conftest.py tests
	MYPYPATH=bench $(MYPY_TESTS) bench
	@failed=0; for root in $(TEST_ROOTS); do \
		echo "MYPYPATH=$$root $(MYPY_TESTS) $$root/tests"; \
		MYPYPATH=$$root $(MYPY_TESTS) $$root/tests || failed=1; \
	done; exit $$failed

fmt: install ## format and fix what ruff can
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

asyncapi: install ## write the AsyncAPI document of the STOMP API (from ws-edge's code) the gateway serves
	$(PY) -m ws_edge.asyncapi services/gateway/src/gateway/asyncapi.json
