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

.PHONY: lock setup run-setup run example test lint typecheck test-js test-py browser redis postgres nginx nchan pushpin clean bench bench-extra bench-idle

setup: $(VENV)/.installed-dev
run-setup: $(VENV)/.installed-run

$(PY):
	$(PYTHON) -m venv $(VENV)

# Every install takes exact, hashed versions from a lock in requirements/
# (run.txt, dev.txt, bench.txt), so a new upstream release never changes what
# `make run`, `make test` or `make bench` get; the package itself goes in
# editable with no dependencies of its own and the locked build backend.
# pip-sync semantics: a stamp per lock, redone when the lock changes.
LOCK_INSTALL = $(PY) -m pip install -q --disable-pip-version-check --require-hashes
SELF_INSTALL = $(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .

$(VENV)/.installed-run: requirements/run.txt pyproject.toml | $(PY)
	$(LOCK_INSTALL) -r requirements/run.txt
	$(SELF_INSTALL)
	touch $@

$(VENV)/.installed-dev: requirements/dev.txt pyproject.toml | $(PY)
	$(LOCK_INSTALL) -r requirements/dev.txt
	$(SELF_INSTALL)
	touch $@

# Refresh every lock to the newest versions pyproject.toml allows (the only
# way the locks change); then run `make test` and fix what the new versions
# break. uv is pinned here, so the lock's own tool never drifts.
UV_VERSION := 0.13.9
UV_COMPILE = $(VENV)/bin/uv pip compile -q --universal --python-version 3.11 \
	--generate-hashes --upgrade pyproject.toml requirements/build.in
lock: | $(PY)
	$(PY) -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(UV_COMPILE) --extra metrics --extra redis --extra postgres -o requirements/run.txt
	$(UV_COMPILE) --extra metrics --extra redis --extra postgres --extra dev -o requirements/dev.txt
	$(UV_COMPILE) --extra metrics --extra redis --extra postgres --extra dev --extra bench -o requirements/bench.txt

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

postgres:
	scripts/ensure-postgres.sh

# Installed only: the proxy tests run nginx themselves (tests/nginx_proxy.py).
nginx:
	scripts/ensure-nginx.sh

# Installed only: the benchmark runs them itself (bench/contenders/nchan.py,
# bench/contenders/pushpin.py), never the system services.
nchan:
	scripts/ensure-nchan.sh

pushpin:
	scripts/ensure-pushpin.sh

lint: setup
	$(VENV)/bin/ruff check src tests examples
	$(VENV)/bin/ruff format --check src tests examples

typecheck: setup
	$(VENV)/bin/mypy

test-js: node_modules/.installed
	scripts/test-js.sh tests/js/
	npx --no-install tsc -p tests/js/types

test-py: setup browser redis postgres nginx node_modules/.installed
	scripts/test-py.sh

test: lint typecheck test-js test-py

# The fan-out benchmark's standard set (docs/benchmarks.md): torchannels over
# SSE, NDJSON stream and WebSocket, and on Redis with one and two workers,
# against a raw asyncio floor, a minimal Tornado server, Nchan (SSE and
# WebSocket; Debian's nginx and libnginx-mod-nchan, installed when missing),
# sse-starlette and python-socketio, at 1,000 and 10,000 subscribers, server
# pinned to CPU 0. About 10 minutes; writes the table into docs/benchmarks.md
# and the chart into docs/benchmarks-fanout.png. `make bench-extra` adds
# Pushpin (Debian's package, installed when missing) beside the floor,
# torchannels SSE and Nchan SSE, into its own table.
# `make bench-idle`: server memory per idle connection and the time to fan
# one message out to all of them (bench/idle.py), at 10,000, 19,000 and
# 100,000 connections; a count over the open-file limit is reported, not run.
BENCH_ARGS ?= --subscribers 1000,10000 --half --rounds 1
BENCH_EXTRA_ARGS ?= --subscribers 1000,10000 --half --rounds 1
bench: $(VENV)/.bench nchan redis
	mkdir -p test-output
	$(PY) bench/fanout.py $(BENCH_ARGS) --json test-output/bench-fanout.json \
		--docs docs/benchmarks.md --chart docs/benchmarks-fanout.png --command "make bench"

BENCH_IDLE_ARGS ?= --connections 10000,19000,100000 --rounds 5
bench-idle: $(VENV)/.bench nchan
	mkdir -p test-output
	$(PY) bench/idle.py $(BENCH_IDLE_ARGS) --json test-output/bench-idle.json \
		--docs docs/benchmarks.md --command "make bench-idle"

bench-extra: $(VENV)/.bench nchan pushpin
	mkdir -p test-output
	$(PY) bench/fanout.py --set extra $(BENCH_EXTRA_ARGS) --json test-output/bench-extra.json \
		--docs docs/benchmarks.md --docs-section bench-extra --command "make bench-extra"

$(VENV)/.bench: requirements/bench.txt $(VENV)/.installed-dev
	$(LOCK_INSTALL) -r requirements/bench.txt
	touch $@

clean:
	rm -rf $(VENV) node_modules test-output
