# Two set-up commands for a fresh machine: `make demo` and `make test` (see README).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast bench bench-smoke device-check clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned resolve would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,deepspeed]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m rl.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests -m "not slow and not slurm and not multiprocess"

bench: $(STAMP)
	$(BIN)/python -m bench.forking_mask

bench-smoke: $(STAMP)
	$(BIN)/python -m pytest -q tests/bench

# On a GPU machine (no venv there: its own python with torch; bench/device_check.py says how the rest travels).
DEVICE_PY ?= python3
device-check:
	$(DEVICE_PY) -m bench.device_check

clean:
	rm -rf $(VENV) runs .pytest_cache
