# `make demo` and `make test` each build their own .venv from nothing but Python 3.11+.
# The demo installs only the runtime dependencies; the tests add the dev extra. Both go
# through uv (from PyPI, bootstrapped into the venv by pip: ~3x faster than pip here),
# and fall back to pip when uv cannot be had.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY_OK := $(VENV)/.python-ok
RUNTIME := $(VENV)/.runtime-stamp
DEV := $(VENV)/.dev-stamp
INSTALL = if [ -x $(BIN)/uv ]; then $(BIN)/uv pip install --quiet --python $(BIN)/python $(1); \
	else $(BIN)/python -m pip install --quiet $(1); fi
# ruff skips .venv; README code blocks are formatted too.
LINTED := . benchmarks/run  # run has no .py suffix, so name it
DEV_SPEC := -e '.[dev,sqlalchemy]'  # a variable: call would split its argument at the comma

.PHONY: demo test lint typecheck unit bench clean

$(PY_OK):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "iamscope needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	-@$(BIN)/python -m pip install --quiet uv || echo "uv not available: installing with pip"
	@touch $(PY_OK)

$(RUNTIME): pyproject.toml $(PY_OK)
	@$(call INSTALL,-e .)
	@touch $(RUNTIME)

$(DEV): pyproject.toml $(PY_OK)
	@$(call INSTALL,$(DEV_SPEC))
	@touch $(RUNTIME) $(DEV)

demo: $(RUNTIME)
	$(BIN)/iamscope demo

lint: $(DEV)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

typecheck: $(DEV)
	$(BIN)/mypy

unit: $(DEV)
	$(BIN)/pytest

test: lint typecheck unit

# Every benchmark in sequence (about 6 minutes); rewrites benchmarks/README.md.
bench: $(DEV)
	$(BIN)/python benchmarks/run

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
