# torchannels: `make run` starts the server, `make test` runs every check.
# Both set up what they need from a clean clone: a venv in .venv (`make run`
# installs the package with its runtime extras only; `make test` adds the
# test tools), and for the tests also Chromium, redis-server and nginx from
# Debian's packages, Redis started when missing, and jQuery from npm as a fixture.
# The venv is made once and reused: a stamp per set of extras is redone only
# when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8090
# What `make run` needs: the server, its metrics and its Redis broker.
RUN_EXTRAS := metrics,redis

.PHONY: setup run-setup run example test lint typecheck test-js test-py browser redis nginx clean bench

setup: $(VENV)/.installed-dev
run-setup: $(VENV)/.installed-run

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[$(RUN_EXTRAS)]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed-run
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The standalone hub in development mode (--dev): the in-memory broker, the
# demo page at /, and an API key made for this run (or TORCHANNELS_API_KEY),
# printed with ready-to-paste publish commands. HOST and PORT choose where
# it listens (make run PORT=8091); other options come from flags,
# TORCHANNELS_* variables or a TOML file (TORCHANNELS_CONFIG).
run: run-setup
	$(VENV)/bin/torchannels serve --dev --host $(HOST) --port $(PORT)

# The seed README's app, embedding torchannels in a Tornado app.
example: run-setup
	$(PY) examples/seed_app.py --host $(HOST) --port 8888

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

browser:
	scripts/ensure-chromium.sh

redis:
	scripts/ensure-redis.sh

# Installed only: the proxy tests run nginx themselves (tests/nginx_proxy.py).
nginx:
	scripts/ensure-nginx.sh

lint: setup
	$(VENV)/bin/ruff check src tests examples
	$(VENV)/bin/ruff format --check src tests examples

typecheck: setup
	$(VENV)/bin/mypy

test-js: node_modules/.installed
	scripts/test-js.sh tests/js/
	npx --no-install tsc -p tests/js/types

test-py: setup browser redis nginx node_modules/.installed
	scripts/test-py.sh

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

$(VENV)/.bench: $(VENV)/.installed-dev pyproject.toml
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

clean:
	rm -rf $(VENV) node_modules test-output
