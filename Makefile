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
# the hash-pinned lock `make setup` installs; `make lock` regenerates it
LOCK := requirements.lock
# torch is installed after the lock, by itself (docs/install.md: CPU or CUDA)
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
# the one disagreement `pip check` may report: xgrammar's metadata asks for triton, which only its
# CUDA kernels use (a CUDA build of torch installs triton itself; the lock leaves it out)
PIP_CHECK_ALLOWED := ^xgrammar [^ ]* requires triton, which is not installed\.$$\|^No broken requirements found\.$$
export DAGSTER_HOME ?= $(CURDIR)/var/dagster_home
export HF_HUB_OFFLINE ?= 1
export LITELLM_LOCAL_MODEL_COST_MAP ?= True
export DAGSTER_DISABLE_TELEMETRY ?= 1

.PHONY: help check-python lock setup run test ui serve lint bench instance clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

# `make setup` installs exactly the versions in $(LOCK) (every file checked against its sha256),
# then torch, which the lock leaves out on purpose: its CPU and CUDA builds are different files
# (docs/install.md). TORCH_INDEX picks a PyTorch wheel index, e.g.
# TORCH_INDEX=https://download.pytorch.org/whl/cu128 for a CUDA build.
$(STAMP): pyproject.toml $(LOCK)
	@PYTHON='$(PYTHON)' bash scripts/check_python.sh $(VENV)
	@echo "==> setting up $(VENV) from $(LOCK) (hash-checked), then $(TORCH_SPEC), then the project"
	@start=$$(date +%s); \
	$(PYTHON) -m venv $(VENV) || { echo "error: '$(PYTHON) -m venv $(VENV)' failed: see docs/install.md" >&2; exit 1; }; \
	$(BIN)/pip install --quiet --upgrade pip && \
	$(BIN)/pip install --quiet --require-hashes --no-deps -r $(LOCK) && \
	$(BIN)/pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) '$(TORCH_SPEC)' && \
	$(BIN)/pip install --quiet --no-deps -e . && \
	{ problems=$$($(BIN)/pip check | grep -v "$(PIP_CHECK_ALLOWED)"); \
	  [ -z "$$problems" ] || { echo "$$problems" >&2; echo "error: the installed packages disagree; if pyproject.toml changed, run make lock" >&2; exit 1; }; } && \
	touch $(STAMP) && echo "==> set-up took $$(( $$(date +%s) - start )) s"

check-python:  ## check that PYTHON is a supported Python with the venv module
	@PYTHON='$(PYTHON)' bash scripts/check_python.sh $(VENV) && echo "$(PYTHON): fine"

# uv resolves pyproject.toml (with the dev extra) for this platform and Python, keeping the
# versions already in $(LOCK) unless LOCK_ARGS=--upgrade (or --upgrade-package NAME). The local
# CPU torch wheel folder of PIP_FIND_LINKS, where set, keeps CUDA-only packages out.
lock:  ## regenerate requirements.lock from pyproject.toml (LOCK_ARGS=--upgrade to move versions)
	@test -x $(BIN)/uv || { PYTHON='$(PYTHON)' bash scripts/check_python.sh $(VENV) && \
	  $(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet "$$(grep -oE '^uv==[^ ]+' $(LOCK) || echo uv)"; }
	$(if $(PIP_FIND_LINKS),UV_FIND_LINKS='$(PIP_FIND_LINKS)') $(BIN)/uv pip compile pyproject.toml \
	  --extra dev --generate-hashes --no-emit-package torch --no-emit-package triton --python $(BIN)/python \
	  --constraint <(echo '$(TORCH_SPEC)') $(LOCK_ARGS) --output-file $(LOCK) \
	  --custom-compile-command 'make lock'

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
	$(BIN)/python bench/bench_readers.py
	$(BIN)/python bench/bench_full_graph.py --no-training
	$(BIN)/python bench/bench_retrieval.py --queries 30
	$(BIN)/python bench/bench_serving.py --pretrain-steps 40
	$(BIN)/python bench/bench_llm_faults.py
	$(BIN)/python bench/bench_injection_detection.py

clean:  ## remove generated data (var/), keep .venv
	rm -rf var
