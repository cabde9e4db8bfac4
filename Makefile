# Two commands do all the set-up: `make train` and `make test` (each creates .venv on first use).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.medimg-installed
# Debian packages the tests need: dcm2niix is the reference for DICOM geometry.
APT_PACKAGES ?= dcm2niix dicom3tools chromium chromium-driver orthanc orthanc-dicomweb
# Extra overrides for `make train`, e.g. `make train ARGS="experiment=seg3d"`.
ARGS ?=

.PHONY: env sysdeps train test lint format bench clean

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

sysdeps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

train: env
	$(PY) scripts/train.py $(ARGS)

lint: env
	$(VENV)/bin/ruff check medimg scripts tests benchmarks
	$(VENV)/bin/ruff format --check medimg scripts tests benchmarks

format: env
	$(VENV)/bin/ruff format medimg scripts tests benchmarks
	$(VENV)/bin/ruff check --fix medimg scripts tests benchmarks

test: env sysdeps lint
	$(PY) -m pytest

bench: env
	$(PY) benchmarks/bench_train_loop.py
	$(PY) benchmarks/bench_data_layer.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
