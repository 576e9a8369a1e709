# aijobs: `make test` and `make demo` do every setup step from a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install chromium test lint format demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The browser tests drive Debian's Chromium (Playwright never downloads one). As
# root with apt-get it is installed here; elsewhere the browser tests say they skip.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium: install failed"; \
	  else \
	    echo "chromium: not installed, browser tests will be skipped (apt-get install chromium)"; \
	  fi; \
	fi

# Finds PostgreSQL and Redis (DATABASE_URL / REDIS_URL) or starts private ones
# under .data/, runs the whole suite, and stops whatever it started.
test: install chromium
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

# Performance figures (devtools, not part of `make test`); see PERFORMANCE.md.
# BENCH_ARGS="--quick" is a one-minute smoke run; --help lists the flags.
.PHONY: bench
bench: install
	$(PY) -m devtools.services run -- $(PY) -m devtools.bench $(BENCH_ARGS)
