# GxPLab: two commands on a fresh machine.
#   make run   set up .venv and materialize the GxP benchmark graph on the embedded default
#   make test  set up .venv and run the test suite (PostgreSQL tests included)
#   make ui    Dagster web UI and daemon on http://127.0.0.1:3000
#   make serve the OpenAI-compatible server for the materialized local models (127.0.0.1:8008)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# pytest-xdist workers of `make test` (each test file runs whole in one worker); 0: one process
TEST_WORKERS ?= 2
STAMP := $(VENV)/.gxplab-installed
export DAGSTER_HOME ?= $(CURDIR)/var/dagster_home
export HF_HUB_OFFLINE ?= 1
export LITELLM_LOCAL_MODEL_COST_MAP ?= True
export DAGSTER_DISABLE_TELEMETRY ?= 1

.PHONY: help setup run test ui serve lint bench instance clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@echo "==> setting up $(VENV) (torch CPU build first, then the project with dev extras)"
	@start=$$(date +%s); \
	$(PYTHON) -m venv $(VENV) && \
	$(BIN)/pip install --quiet --upgrade pip && \
	$(BIN)/pip install --quiet torch==2.13.0 && \
	$(BIN)/pip install --quiet -e '.[dev]' && \
	touch $(STAMP) && echo "==> set-up took $$(( $$(date +%s) - start )) s"

setup: $(STAMP)  ## create .venv and install everything

instance: setup  ## write $DAGSTER_HOME/dagster.yaml (SQLite, or PostgreSQL when GXPLAB_DAGSTER_PG_URL is set)
	@$(BIN)/gxplab init-instance

run: instance  ## materialize the whole graph (data, models, evaluation) on the embedded default, print the leaderboard
	@$(BIN)/gxplab benchmark

test: setup  ## run the tests in TEST_WORKERS processes (default 2; starts a local PostgreSQL if none is reachable)
	@bash scripts/ensure_postgres.sh
	@bash scripts/ensure_chromium.sh
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

ui: instance  ## dagster dev (webserver + daemon) on 127.0.0.1:3000
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

serve: instance  ## OpenAI-compatible server (serving/) for the materialized local models on 127.0.0.1:8008
	$(BIN)/gxplab serve

lint: setup  ## ruff
	$(BIN)/ruff check .

bench: setup  ## run the benchmarks in bench/ (see docs/benchmarks.md)
	$(BIN)/python bench/bench_generate.py
	$(BIN)/python bench/bench_audit_score.py
	$(BIN)/python bench/bench_candidate_runner.py
	$(BIN)/python bench/bench_grit.py
	$(BIN)/python bench/bench_training_methods.py --steps 20 --repeats 3 --pretrain-steps 20
	$(BIN)/python bench/bench_judge_throughput.py
	$(BIN)/python bench/bench_aqi.py
	$(BIN)/python bench/bench_inbox_sensor.py
	$(BIN)/python bench/bench_full_graph.py --no-training

clean:  ## remove generated data (var/), keep .venv
	rm -rf var
