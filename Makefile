# torchannels: `make run` starts the server, `make test` runs every check.
# Both set up what they need from a clean clone (a venv in .venv; for the
# tests also Chromium, redis-server and nginx from Debian's packages, Redis
# started when missing, and jQuery from npm as a fixture).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 8090

.PHONY: setup run example test lint typecheck test-js test-py browser redis nginx clean

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

# Installed only: the proxy tests run nginx themselves (tests/nginx.py).
nginx:
	scripts/ensure-nginx.sh

lint: setup
	$(VENV)/bin/ruff check src tests examples
	$(VENV)/bin/ruff format --check src tests examples

typecheck: setup
	$(VENV)/bin/mypy

test-js: node_modules/.installed
	node --test tests/js/
	npx --no-install tsc -p tests/js/types

test-py: setup browser redis nginx node_modules/.installed
	$(VENV)/bin/pytest -q

test: lint typecheck test-js test-py

clean:
	rm -rf $(VENV) node_modules test-output
