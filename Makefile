# crdtsync: the two commands of README.md, and a few more.
#   make relay    the main job: the relay on 127.0.0.1:8765, stored in relay-data/relay.db
#   make test     lint, type-check and the whole test suite
#   make example  the field-inspection example: relay, inspector page, office (README)
# Each target installs what it needs into .venv first: the library with the relay's
# extra (crdtsync[relay]) and the test and dev tools.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: install run relay demo example example-web test lint typecheck pytest node-deps bench bench-full clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "crdtsync needs Python 3.11+"'
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3 -m venv failed; installing python3-venv with apt-get"; \
	  apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[relay,test,dev]'
	@touch $(STAMP)

HOST  ?= 127.0.0.1
PORT  ?= 8765
STORE ?= sqlite:///relay-data/relay.db
# Off loopback the relay refuses to run open. Give it keys to require tokens
# (SECRET_FILE=path of 'kid=secret' lines, README "Access control"), or accept an
# open relay on the network with INSECURE=1. RELAY_FLAGS passes any other flag.
SECRET_FILE ?=
INSECURE    ?=
RELAY_FLAGS ?=
RELAY_AUTH   = $(if $(SECRET_FILE),--require-auth --secret-file $(SECRET_FILE)) $(if $(INSECURE),--insecure)

run: relay

relay: $(STAMP)
	@$(PY) -m relay --host $(HOST) --port $(PORT) --store $(STORE) $(RELAY_AUTH) $(RELAY_FLAGS) || { \
	  status=$$?; \
	  case "$(HOST)" in 127.*|localhost|::1) ;; *) [ -n "$(SECRET_FILE)$(INSECURE)" ] || \
	    echo "make relay HOST=$(HOST): add SECRET_FILE=keys (tokens required) or INSECURE=1" >&2;; esac; \
	  exit $$status; }

demo: $(STAMP)
	$(PY) -m crdtsync demo

# The field-inspection example (examples/inspections, README "Quick start"): the relay
# (SQLite, relay-data/example/), the inspector page's server and the office process, all on
# loopback; it prints the page's URL. The page is bundled from stock npm packages pinned in
# its package-lock.json (npm ci, then esbuild). EXAMPLE_FLAGS: more flags of run.py
# (--relay-port, --web-port, --data).
EXAMPLE_WEB   = examples/inspections/web
EXAMPLE_NPM   = $(EXAMPLE_WEB)/node_modules/.installed
EXAMPLE_JS    = $(EXAMPLE_WEB)/dist/app.js
EXAMPLE_FLAGS ?=

example: $(STAMP) example-web
	@$(PY) examples/inspections/run.py $(EXAMPLE_FLAGS)

example-web: $(EXAMPLE_JS)

$(EXAMPLE_NPM): $(EXAMPLE_WEB)/package.json $(EXAMPLE_WEB)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { \
	  echo "the inspector page is built with npm: install Node.js 18+ and npm" >&2; exit 1; }
	npm ci --prefix $(EXAMPLE_WEB) --no-audit --no-fund --loglevel=error
	@touch $@

$(EXAMPLE_JS): $(EXAMPLE_NPM) $(filter-out $(EXAMPLE_WEB)/sw.js,$(wildcard $(EXAMPLE_WEB)/*.js))
	npm run --prefix $(EXAMPLE_WEB) --silent build

# ruff, and the layering contracts of pyproject.toml ([tool.importlinter]).
lint: $(STAMP)
	$(VENV)/bin/ruff check crdtsync relay tests benchmarks examples
	$(VENV)/bin/ruff format --check crdtsync relay tests benchmarks examples
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict crdtsync relay
	$(VENV)/bin/mypy --strict examples/inspections/office.py examples/inspections/run.py

# The Yjs interop tests (tests/test_yjs_interop.py) run stock Yjs clients from npm,
# pinned in tests/js/package-lock.json. With node and npm, pytest installs them
# first; without, it says so and those tests skip, except in CI (CI=true): fail.
JS_DIR     = tests/js
NODE_STAMP = $(JS_DIR)/node_modules/.installed
HAVE_NODE := $(shell command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && echo yes)

node-deps: $(NODE_STAMP)

$(NODE_STAMP): $(JS_DIR)/package.json $(JS_DIR)/package-lock.json
	npm ci --prefix $(JS_DIR) --no-audit --no-fund --loglevel=error
	@touch $(NODE_STAMP)

# The benchmark's peers (pinned, into benchmarks/.peers): their smoke tests in
# tests/test_benchmarks.py run against them. Idempotent; quick once installed.
.PHONY: peers
peers: $(STAMP)
	$(PY) -m benchmarks.peers

ifeq ($(HAVE_NODE),yes)
PYTEST_NODE = $(NODE_STAMP) peers $(EXAMPLE_JS)
else
PYTEST_NODE = node-missing
endif

.PHONY: node-missing
node-missing:
	@if [ "$$CI" = "true" ]; then \
	  echo "CI=true but node/npm are not installed: the Yjs interop tests must run in CI" >&2; \
	  exit 1; fi
	@echo "node/npm not found: the Yjs interop tests (tests/test_yjs_interop.py) and the" \
	  "example's browser test (tests/test_example_inspections.py) will be skipped"

# The Redis tests start private redis-server processes: install the Debian package
# when the binary is missing (CI is root on Debian; elsewhere, say why they skip).
.PHONY: redis-server
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not found: installing the Debian package redis-server"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) \
	    >/dev/null || { \
	    if [ "$$CI" = "true" ]; then echo "could not install redis-server" >&2; exit 1; fi; \
	    echo "could not install redis-server: the Redis tests will be skipped"; }; }

# The example's browser test (tests/test_example_inspections.py) drives Debian's Chromium
# (never a downloaded browser): install the package when /usr/bin/chromium is missing.
.PHONY: chromium
chromium:
	@[ -x /usr/bin/chromium ] || { \
	  echo "chromium not found: installing the Debian package chromium"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	    >/dev/null || { \
	    if [ "$$CI" = "true" ]; then echo "could not install chromium" >&2; exit 1; fi; \
	    echo "could not install chromium (apt-get install chromium):" \
	      "the browser test will be skipped"; }; }

# pytest exits 5 when it collects no tests: not a failure of the build.
pytest: $(STAMP) $(PYTEST_NODE) redis-server chromium
	$(VENV)/bin/pytest; status=$$?; \
	  if [ $$status -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$status

test: lint typecheck pytest

# The benchmarks' own extra (matplotlib for the plots); the peer servers are installed by
# python -m benchmarks itself into benchmarks/.peers (pinned, git-ignored).
BENCH_STAMP = $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m benchmarks --quick

bench-full: $(BENCH_STAMP)
	$(PY) -m benchmarks --full

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis demo-data \
	  $(EXAMPLE_WEB)/node_modules $(EXAMPLE_WEB)/dist
