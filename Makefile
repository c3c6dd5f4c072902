# Two commands do all the set-up on a fresh machine:
#   make serve   - install into .venv and run the gateway on the embedded default
#   make test    - install into .venv, lint and type-check, run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: serve test install lint bench

$(STAMP): pyproject.toml examples/forecast_plugin/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]' -e examples/forecast_plugin
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/plugway serve

test: lint
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check runtime plugins mcp_servers workers tests examples benchmarks
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/gateway_overhead.py
