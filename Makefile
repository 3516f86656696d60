# Two commands after cloning: `make demo` (the main job) and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test benchmark benchmark-temporal

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/nnsam fewshot --out demo_output

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -rs

benchmark: $(BIN)/.installed
	$(BIN)/python benchmarks/benchmark.py

benchmark-temporal: $(BIN)/.installed
	$(BIN)/python benchmarks/temporal_step.py
