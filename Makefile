# traitpipe: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SHELL  := /bin/bash
.SHELLFLAGS := -o pipefail -c
# pip on this machine warns about every missing local index folder: keep the log readable.
QUIET  := { grep -v "^WARNING: Location" || true; }

.PHONY: demo test cluster-test bench install clean

install: $(STAMP)

# torch/torchvision first (ranges, so a cluster keeps its own CUDA build), then
# the package with --no-build-isolation: sam2 builds from source against the
# torch already installed (SAM2_BUILD_CUDA=0 skips its optional CUDA extension).
$(STAMP): pyproject.toml
	@echo ">> setting up $(VENV) (first run only, a few minutes)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check setuptools wheel 2>&1 | $(QUIET)
	$(PY) -m pip install -q --disable-pip-version-check "torch>=2.5" "torchvision>=0.20" 2>&1 | $(QUIET)
	SAM2_BUILD_CUDA=0 $(PY) -m pip install -q --disable-pip-version-check --no-build-isolation -e ".[test]" 2>&1 | $(QUIET)
	$(PY) -c "import traitpipe, torch, timm, open_clip, sam2, snakemake, zarr, dask, pyarrow, duckdb"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/traitpipe demo

# Three test processes (pytest-xdist) on a 2-core machine: a workflow test's serial stretches (Snakemake's
# start, one training job) leave a core idle that another process uses (with two, the cores were busy 78% of
# the time). worksteal: the slow workflow tests, last in the order, are shared out as well.
test: $(STAMP)
	$(PY) -m pytest -q -n 3 --dist worksteal

# The workflow through the slurm profile on a real one-node SLURM started here (installs slurm-wlm and
# munge with apt-get: root, or sudo). Not part of `make test`.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
cluster-test: $(STAMP)
	$(SUDO) bash scripts/local-slurm.sh
	$(PY) -m pytest -q -m cluster tests/test_cluster.py

bench: $(STAMP)
	@for b in bench/*.py; do echo ">> $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf results resources .snakemake
