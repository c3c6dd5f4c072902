# Two commands do all the set-up on a fresh machine:
#   make serve   - install what serving needs into .venv and run the gateway on the embedded default
#   make test    - install the test extra too, lint and type-check, run the whole test suite
#   make chat    - a terminal chat with the gateway `make serve` runs, with its quick-start key
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Two stamps: serving installs plugway alone; the test extra (pytest, mypy, playwright, ...)
# comes only with `make test` / `make install`.
SERVE_STAMP := $(VENV)/.installed-serve
STAMP := $(VENV)/.installed-test

.PHONY: serve chat test install lint bench browser agents

$(SERVE_STAMP): pyproject.toml examples/forecast_plugin/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e . -e examples/forecast_plugin
	touch $(SERVE_STAMP)

$(STAMP): $(SERVE_STAMP)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

serve: $(SERVE_STAMP)
	$(VENV)/bin/plugway serve

# The keys `plugway serve` saved beside plugway.db set PLUGWAY_API_KEY, which `plugway chat` reads.
chat: $(SERVE_STAMP)
	@test -f plugway-keys.env || { echo "make: no plugway-keys.env here yet: run 'make serve' first (in another terminal)"; exit 1; }
	. ./plugway-keys.env && $(VENV)/bin/plugway chat

# Three test processes on two cores: most tests wait on sockets, servers and subprocesses.
test: lint browser agents
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

# The coding agents the end-to-end tests drive (OpenAI's Codex CLI, Anthropic's Claude Code), at the
# versions the README documents, installed from npm into .agents/ (never globally, never at test time).
CODEX_VERSION := 0.171.0
CLAUDE_CODE_VERSION := 2.1.332
AGENTS_STAMP := .agents/.installed-$(CODEX_VERSION)-$(CLAUDE_CODE_VERSION)
$(AGENTS_STAMP):
	@command -v npm >/dev/null || { echo "make: npm is needed for the coding-agent tests (apt-get install nodejs npm)"; exit 1; }
	npm install --silent --no-fund --no-audit --prefix .agents @openai/codex@$(CODEX_VERSION) @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION)
	touch $(AGENTS_STAMP)
agents: $(AGENTS_STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check runtime plugins mcp_servers workers tests examples benchmarks
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/side_by_side.py
