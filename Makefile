# The two commands of the README: `make demo` and `make test`. Both set themselves up on a
# machine with only Python 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,flask,django,drf,fastapi,server,speedups,server-speedups]'
	touch $(STAMP)

# Debian packages the tests drive for real: PostgreSQL, headless Chromium and nginx.
system-deps:
	@sh scripts/system-deps.sh

demo: $(STAMP)
	$(BIN)/python -m examples.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict sqreen tests/typing

pytest: $(STAMP) system-deps
	sh scripts/pytest.sh

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build dist *.egg-info sqreen-events.jsonl
