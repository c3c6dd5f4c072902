# Two commands do all the set-up on a fresh machine:
#   make serve   - install into .venv and run the gateway on the embedded default
#   make test    - install into .venv, lint and type-check, run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: serve test install lint bench browser

$(STAMP): pyproject.toml examples/forecast_plugin/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]' -e examples/forecast_plugin
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/plugway serve

# Three test processes on two cores: most tests wait on sockets, servers and subprocesses.
test: lint browser
	$(PY) -m pytest -q -n 3

# The console's browser tests drive Debian's Chromium through Playwright (never a browser
# download of Playwright's own). Installed here when missing, as root: CI runs as root.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "make: installing Debian's chromium for the console's browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "make: no $(CHROMIUM) and not root: the console's browser tests will be skipped (sudo apt-get install chromium)"; \
	  fi; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check runtime plugins mcp_servers workers tests examples benchmarks
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/side_by_side.py
