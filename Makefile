# `make demo` and `make test` each build their own .venv from nothing but Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# ruff skips .venv; README code blocks are formatted too.
LINTED := . benchmarks/run  # run has no .py suffix, so name it

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "iamscope needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,sqlalchemy]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/iamscope demo

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck unit

# Every benchmark in sequence (about 6 minutes); rewrites benchmarks/README.md.
bench: $(STAMP)
	$(BIN)/python benchmarks/run

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
