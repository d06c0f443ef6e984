# flops-fit: `make help` lists the targets. Stage targets take RUN_DIR=... and ARGS="hydra overrides".
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN_DIR ?= outputs/default
ARGS ?=
TEST_WORKERS ?= auto
BENCH_SWEEP_ARGS ?=
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup test test-fast demo demo-check demo-wsd demo-vit demo-mock plan train analyze plot bench bench-sweep clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-11s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# the CPU torch wheel first, so the package's torch requirement is already met
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev,text,slurm]"
	@touch $(STAMP)

setup: $(STAMP) ## Create .venv with the CPU torch wheel and flops-fit (editable, dev extras)

test: $(STAMP) ## Run the test suite, one worker per core (pytest-xdist; TEST_WORKERS=0 runs it in one process)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) $(ARGS)

test-fast: $(STAMP) ## The edit-test loop: every test not marked slow (unit tests, the mock pipeline; under a minute on 2 cores)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not slow" $(ARGS)

demo: $(STAMP) ## A real CPU sweep (GPT on BBC News, 4 budgets x 5 sizes; small runs packed) into outputs/demo
	$(BIN)/ff-plan run_dir=outputs/demo grid.points=5 $(ARGS)
	$(BIN)/ff-train run_dir=outputs/demo trainer=local
	$(BIN)/ff-analyze run_dir=outputs/demo table_max_budget=1e16
	$(BIN)/ff-plot run_dir=outputs/demo
	@echo "open outputs/demo/report.html (figures in outputs/demo/plots/)"

demo-check: $(STAMP) ## After make demo: train a 5-size IsoFLOP at 4x its largest budget and score the forecast registered before it (docs/forecasts.md) into outputs/demo-check
	$(BIN)/ff-plan run_dir=outputs/demo-check forecast_from=outputs/demo grid.points=5 $(ARGS)
	$(BIN)/ff-train run_dir=outputs/demo-check trainer=local
	$(BIN)/ff-analyze run_dir=outputs/demo-check
	$(BIN)/ff-plot run_dir=outputs/demo-check
	@echo "open outputs/demo-check/report.html"

demo-wsd: $(STAMP) ## The demo's study as a shared-trunk WSD sweep (~70% of its FLOPs, docs/wsd.md) into outputs/demo-wsd
	$(BIN)/ff-plan run_dir=outputs/demo-wsd grid.points=5 schedule=wsd $(ARGS)
	$(BIN)/ff-train run_dir=outputs/demo-wsd trainer=local
	$(BIN)/ff-analyze run_dir=outputs/demo-wsd table_max_budget=1e16
	$(BIN)/ff-plot run_dir=outputs/demo-wsd
	@echo "open outputs/demo-wsd/report.html (figures in outputs/demo-wsd/plots/)"

demo-vit: $(STAMP) ## A real CPU ViT sweep on Fashion-MNIST (apt-get install dataset-fashion-mnist) into outputs/demo-vit
	$(BIN)/ff-plan run_dir=outputs/demo-vit model=vit dataset=fashion_mnist budgets=cpu_small grid.points=5 \
	  model.kwargs.depth=2 model.kwargs.head_dim=4 model.kwargs.patch_size=7 model.size_range=[8,4096] $(ARGS)
	$(BIN)/ff-train run_dir=outputs/demo-vit trainer=local trainer.batch_size=256
	$(BIN)/ff-analyze run_dir=outputs/demo-vit table_max_budget=1e16
	$(BIN)/ff-plot run_dir=outputs/demo-vit

dc-study: $(STAMP) ## A data-constrained study on CPU (GPT on BBC News cut to 25K-400K unique tokens, 1-32 epochs, ~6 min; docs/data-constrained.md) into outputs/dc-study
	OMP_NUM_THREADS=1 $(BIN)/python scripts/data_constrained_study.py --out outputs/dc-study
	$(BIN)/ff-analyze run_dir=outputs/dc-study input=outputs/dc-study/runs.csv
	$(BIN)/ff-plot run_dir=outputs/dc-study

demo-mock: $(STAMP) ## The whole pipeline in seconds with the mock trainer (its closed-form truth: fresh data, stated as 1e15 unique tokens) into outputs/demo-mock
	$(BIN)/ff-plan run_dir=outputs/demo-mock budgets=chinchilla model.size_range=[16,32768] dataset.unique_units=1000000000000000 $(ARGS)
	$(BIN)/ff-train run_dir=outputs/demo-mock trainer=mock
	$(BIN)/ff-analyze run_dir=outputs/demo-mock
	$(BIN)/ff-plot run_dir=outputs/demo-mock
	@echo "open outputs/demo-mock/report.html (figures in outputs/demo-mock/plots/)"

plan: $(STAMP) ## ff-plan into RUN_DIR (ARGS="model=vit budgets=tiny ...")
	$(BIN)/ff-plan run_dir=$(RUN_DIR) $(ARGS)

train: $(STAMP) ## ff-train RUN_DIR (ARGS="trainer=local ...")
	$(BIN)/ff-train run_dir=$(RUN_DIR) $(ARGS)

analyze: $(STAMP) ## ff-analyze RUN_DIR (ARGS="bootstrap=500 holdout=1 ...")
	$(BIN)/ff-analyze run_dir=$(RUN_DIR) $(ARGS)

plot: $(STAMP) ## ff-plot RUN_DIR
	$(BIN)/ff-plot run_dir=$(RUN_DIR) $(ARGS)

bench: $(STAMP) ## Benchmarks: fit speed, bias per synthetic family, noisy inference, real sweeps, coverage, sequential design vs fixed grids, throughput vs matmul peak, the demo sweep (tens of minutes)
	$(BIN)/python benchmarks/bench_fit.py
	$(BIN)/python benchmarks/bench_families.py
	$(BIN)/python benchmarks/bench_inference.py
	$(BIN)/python benchmarks/real_sweeps.py
	$(BIN)/python benchmarks/bench_forecast.py
	$(BIN)/python benchmarks/coverage.py
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/bench_design.py
	$(BIN)/python benchmarks/bench_throughput.py
	$(BIN)/python benchmarks/bench_mock.py
	$(BIN)/python benchmarks/bench_sweep.py $(BENCH_SWEEP_ARGS)

bench-sweep: $(STAMP) ## The demo sweep only: cosine vs WSD, one run at a time vs packed (BENCH_SWEEP_ARGS="--budgets 1e11 2.5e11")
	$(BIN)/python benchmarks/bench_sweep.py $(BENCH_SWEEP_ARGS)

clean: ## Remove outputs, caches and build files (keeps .venv)
	rm -rf outputs multirun build dist .pytest_cache src/*.egg-info
	find . -name __pycache__ -type d -prune -not -path "./$(VENV)/*" -exec rm -rf {} +
