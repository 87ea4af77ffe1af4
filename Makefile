# Two commands matter: `make demo` and `make test`. Both start from nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
CONFIG ?= configs/demo.yaml
PREFECT_PORT ?= 4200
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install install-test constraints system-deps demo test test-fast down bench clean

# What the pipeline needs (make demo), then what the tests add on top (make test): the demo does not
# wait for the test tools (moto, playwright, database drivers). Both install the versions pinned in
# constraints.txt (CONSTRAINTS), so that a fresh clone installs what was tested, not whatever is newest.
CONSTRAINTS ?= constraints.txt

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(CONSTRAINTS) $(TORCH_PINS)
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[s3]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed $(CONSTRAINTS)
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[test,s3]'
	touch $@

# Refresh constraints.txt after changing pyproject.toml's dependencies (or TORCH_PINS): a fresh venv
# in a temporary folder, the project with its test and s3 extras installed there without constraints
# (the newest releases within pyproject.toml's bounds), then frozen without the project itself.
# Review the diff, then run make test with it.
constraints:
	set -euo pipefail; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install -q --upgrade pip; \
	"$$tmp/venv/bin/python" -m pip install -q $(TORCH_PINS); \
	"$$tmp/venv/bin/python" -m pip install -q -e '.[test,s3]'; \
	{ sed -n '/^#/p;/^[^#]/q' $(CONSTRAINTS); \
	  "$$tmp/venv/bin/python" -m pip freeze --exclude-editable | grep -v -i -E '^lift[-_]pipeline([=@ ]|$$)'; \
	} > "$$tmp/constraints.txt"; \
	if grep -n -E ' @ |://' "$$tmp/constraints.txt"; then echo "constraints: a package above was installed from a path or URL" >&2; exit 1; fi; \
	mv "$$tmp/constraints.txt" $(CONSTRAINTS)

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(VENV)/bin/python infra/local_stack.py demo --config $(CONFIG) --port $(PREFECT_PORT)

down:
	-$(VENV)/bin/python infra/local_stack.py down

# The system packages some integration tests need (PostgreSQL 15, Chromium): installed when missing and
# this user may (root with apt-get); quick when present. When they cannot be installed, the tests that
# need them skip, each with a one-line reason in pytest's summary (-ra).
system-deps:
	@bash infra/install_system_deps.sh || echo "make: the tests that need the missing system packages will be skipped" >&2

test: install-test system-deps
	$(VENV)/bin/python -m pytest tests

test-fast: install-test
	$(VENV)/bin/python -m pytest tests -m "not slow"

# gpu_real_scale.py needs a CUDA GPU (its --tiny smoke version runs in the tests); reward_selection.py reads
# the demo's alignment output (runs/demo).
bench: install
	for b in benchmarks/[!_]*.py; do \
	  if [ "$$b" = benchmarks/gpu_real_scale.py ] && ! $(PY) -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then \
	    echo "bench: skipping $$b (no CUDA GPU here)"; continue; fi; \
	  if [ "$$b" = benchmarks/reward_selection.py ] && ! ls runs/demo/align/*/_SUCCESS.json >/dev/null 2>&1; then \
	    echo "bench: skipping $$b (it reads the demo's alignment: run make demo first)"; continue; fi; \
	  $(PY) $$b || exit 1; done

clean: down
	rm -rf runs .prefect-local
