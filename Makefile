# torchannels: `make run` starts the server, `make test` runs every check.
# Both set up what they need from a clean clone (a venv in .venv; for the
# tests also Chromium and redis-server from Debian's packages, started when
# missing, and jQuery from npm as a fixture).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8090

.PHONY: setup run example test lint typecheck test-js test-py browser redis clean bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The standalone hub on the in-memory broker, with its demo page at /.
# Options come from flags, TORCHANNELS_* variables or a TOML file.
run: setup
	$(VENV)/bin/torchannels serve --host $(HOST) --port $(PORT)

# The seed README's app, embedding torchannels in a Tornado app.
example: setup
	$(PY) examples/seed_app.py --host $(HOST) --port 8888

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

browser:
	scripts/ensure-chromium.sh

redis:
	scripts/ensure-redis.sh

lint: setup
	$(VENV)/bin/ruff check src tests examples
	$(VENV)/bin/ruff format --check src tests examples

typecheck: setup
	$(VENV)/bin/mypy

test-js: node_modules/.installed
	node --test tests/js/
	npx --no-install tsc -p tests/js/types

test-py: setup browser redis node_modules/.installed
	$(VENV)/bin/pytest -q

test: lint typecheck test-js test-py

# The fan-out benchmark's standard set (docs/benchmarks.md): torchannels over
# SSE, NDJSON stream and WebSocket against a raw asyncio floor, a minimal
# Tornado server, sse-starlette and python-socketio, at 1,000 and 10,000
# subscribers, server pinned to CPU 0. About 10 minutes; writes the table
# into docs/benchmarks.md and the chart into docs/benchmarks-fanout.png.
BENCH_ARGS ?= --subscribers 1000,10000 --half --rounds 1
bench: $(VENV)/.bench
	mkdir -p test-output
	$(PY) bench/fanout.py $(BENCH_ARGS) --json test-output/bench-fanout.json \
		--docs docs/benchmarks.md --chart docs/benchmarks-fanout.png --command "make bench"

$(VENV)/.bench: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

clean:
	rm -rf $(VENV) node_modules test-output
