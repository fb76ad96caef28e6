# Threshold: `make demo` runs a simulated store entrance end to end; `make test` runs every test.
# Both create the virtualenv and install what is missing (Debian packages when run as root).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test check bench system-deps venv clean

demo: system-deps venv
	$(BIN)/edge-gateway demo

test: system-deps venv check
	$(BIN)/pytest -q

check: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: system-deps venv
	$(BIN)/python -m benchmarks.run --out bench-results/latest.json

system-deps:
	@sh .ci/system-deps.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) bench-results .pytest_cache .mypy_cache .ruff_cache
