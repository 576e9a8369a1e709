# aijobs: `make test` and `make demo` do every setup step from a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install test lint format demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Finds PostgreSQL and Redis (DATABASE_URL / REDIS_URL) or starts private ones
# under .data/, runs the whole suite, and stops whatever it started.
test: install
	$(PY) -m devtools.services run -- $(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

demo: install
	$(PY) -m devtools.services run -- $(PY) -m devtools.demo

clean:
	rm -rf $(VENV) .data .pytest_cache .ruff_cache
