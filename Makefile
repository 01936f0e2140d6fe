# warpbio: two set-up commands, `make demo` and `make test`, on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
# pytest-xdist processes for make test; each takes whole test files
TEST_WORKERS ?= 2
STAMP := $(VENV)/.installed

.PHONY: demo test lint pytest report dry-run clean reproduce pin-envs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0  # CPU build; unpinned pulls CUDA
	$(BIN)/python -m pip install --quiet -e ".[workflow,test]"
	$(BIN)/python -m pip install --quiet --no-deps alphafold-colabfold==2.3.18  # fold reference
	touch $(STAMP)

## make demo: venv + package + Snakemake, then the demo DAG on the CPU
demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report report.html
	@echo "demo done: results/ and report.html"

## make test: lint, then the test suite
test: lint pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check workflow/ tests/workflow/gpu_lease/Snakefile
	$(BIN)/snakemake --lint --cores 1
	$(BIN)/snakemake --dry-run --quiet rules --cores 32 --resources gpu=8

pytest: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

report: $(STAMP)
	$(BIN)/snakemake --report report.html

## make reproduce: finish the demo if needed, rerun it from scratch in a temporary
## folder and compare every output's checksum (CPU outputs must be identical)
reproduce: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/warpbio reproduce --cores $(CORES)

## make pin-envs: pinned package lists of workflow/envs from this environment
pin-envs: $(STAMP)
	$(BIN)/warpbio pin-envs

clean:
	rm -rf results logs benchmarks/runs report.html .snakemake
