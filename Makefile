# aijobs: `make test` and `make demo` do every setup step from a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install chromium test lint format demo token screenshots pngquant clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages some targets use: installed with apt-get when run as root,
# otherwise named with what goes without them. $(1) command, $(2) package, $(3) the cost.
define debian_package
	@if ! command -v $(1) >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && apt-get install -y -qq $(2) >/dev/null) || echo "$(2): install failed"; \
	  else \
	    echo "$(2): not installed, $(3) (apt-get install $(2))"; \
	  fi; \
	fi
endef

# The browser tests drive Debian's Chromium (Playwright never downloads one).
chromium:
	$(call debian_package,chromium,chromium,browser tests will be skipped)

# Finds PostgreSQL and Redis (DATABASE_URL / REDIS_URL) or starts private ones
# under .data/, runs the whole suite, and stops whatever it started.
test: install chromium
	$(PY) -m devtools.servers run -- $(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Other ports: make demo WEB_PORT=8001 FLOWER_PORT=5556 WEBHOOK_PORT=8026
WEB_PORT ?= 8000
FLOWER_PORT ?= 5555
WEBHOOK_PORT ?= 8025
demo: install
	$(PY) -m devtools.servers run -- $(PY) -m devtools.demo \
	  --web-port $(WEB_PORT) --flower-port $(FLOWER_PORT) --webhook-port $(WEBHOOK_PORT)

# A new API token for another user (created if missing) of the running demo, alone on
# stdout: TOKEN=$(make -s token API_USER=alice). The demo writes $(DEMO_DIR)/env while it runs.
DEMO_DIR ?= .data/demo
token:
	@test -f $(DEMO_DIR)/env || { echo "make token: no demo is running (start one: make demo)" >&2; exit 1; }
	@test -n "$(API_USER)" || { echo "make token: name the user: make token API_USER=alice" >&2; exit 1; }
	@set -a && . $(DEMO_DIR)/env && set +a && $(PY) manage.py create_api_token '$(API_USER)' --create-user

# The README's screenshots, on demand only (never in make test): the browser tests on the
# real stack, saving each page they visit into docs/screenshots/.
screenshots: install chromium pngquant
	rm -f docs/screenshots/*.png
	AIJOBS_SCREENSHOTS=docs/screenshots $(PY) -m devtools.servers run -- $(PY) -m pytest tests/browser -q
	@if command -v pngquant >/dev/null; then \
	  pngquant --quality 65-90 --skip-if-larger --strip --force --ext .png docs/screenshots/*.png \
	    || test $$? -ge 98; \
	fi

# Shrinks the screenshots about threefold (256 colours are plenty for the UI).
pngquant:
	$(call debian_package,pngquant,pngquant,screenshots are committed as Chromium saves them)

clean:
	rm -rf $(VENV) .data .pytest_cache .ruff_cache

# Performance figures (devtools, not part of `make test`); see PERFORMANCE.md.
# BENCH_ARGS="--quick" is a one-minute smoke run; --help lists the flags.
.PHONY: bench wrk
# d's load generator; without it d uses a slower Python client and its table says so.
wrk:
	$(call debian_package,wrk,wrk,d uses the Python client)

bench: install wrk
	$(PY) -m devtools.servers run -- $(PY) -m devtools.bench $(BENCH_ARGS)
