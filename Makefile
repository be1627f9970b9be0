# The two set-up commands: `make run` (platform with sample data) and `make test` (everything CI runs).
VENV := .venv
BIN := $(VENV)/bin
INSITU_HOME ?= ./insitu-home
export INSITU_HOME
# The demo's example tools build their environments from the wheels bootstrap downloads.
INSITU_TOOL_WHEEL_DIR ?= $(CURDIR)/.wheelhouse
export INSITU_TOOL_WHEEL_DIR

.PHONY: run test lint typecheck unit bench bootstrap

bootstrap:
	./scripts/bootstrap.sh

run: bootstrap
	$(BIN)/insitu demo

lint: bootstrap
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: bootstrap
	$(BIN)/mypy

unit: bootstrap
	$(BIN)/pytest -n 2 --dist loadgroup

test: lint typecheck unit

bench:
	./scripts/bootstrap.sh --bench
	$(BIN)/python bench/ingest_bench.py
	$(BIN)/python bench/ocr_bench.py
	$(BIN)/python bench/ledger_bench.py
	$(BIN)/python bench/dataset_bench.py
	$(BIN)/python bench/job_bench.py
	$(BIN)/python bench/release_bench.py
	$(BIN)/python bench/viewer_bench.py
	$(BIN)/python bench/explorer_bench.py
