# prosum: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
DATA_DIR ?= $(or $(PROSUM_DATA_DIR),.prosum)
PYTEST_ARGS ?=

.PHONY: setup run test check lint format typecheck imports bench clean

setup:
	@./scripts/setup.sh

## Set up and run the whole platform on the embedded default (tansu, SQLite, all five services).
run: setup
	$(UV) run prosum up --data-dir "$(DATA_DIR)"

## Set up and run the whole test suite.
test: setup
	$(UV) run pytest $(PYTEST_ARGS)

## ruff (lint and format), mypy strict on src/, import-linter.
check: setup lint typecheck imports

lint:
	$(UV) run ruff check .
	$(UV) run ruff format --check .

format:
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

typecheck:
	$(UV) run mypy -p prosum_contracts -p prosum_platform -p prosum_auth -p prosum_cli -p prosum_identity \
		-p prosum_metering -p prosum_orderbook -p prosum_settlement -p prosum_ledger

imports:
	$(UV) run lint-imports

## Benchmarks print their figures; see bench/README.md.
bench: setup
	@for b in bench/[a-z]*.py; do m=$$(basename $$b .py); echo "== bench.$$m"; $(UV) run python -m bench.$$m || exit 1; done

clean:
	rm -rf .prosum .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov
