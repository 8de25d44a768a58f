# crdtsync: the two commands of README.md, and a few more.
#   make relay  the main job: the relay on 127.0.0.1:8765, stored in relay-data/relay.db
#   make test   lint, type-check and the whole test suite
# Each target installs what it needs into .venv first.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: install run relay demo test lint typecheck pytest bench bench-full clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "crdtsync needs Python 3.11+"'
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3 -m venv failed; installing python3-venv with apt-get"; \
	  apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	@touch $(STAMP)

HOST  ?= 127.0.0.1
PORT  ?= 8765
STORE ?= sqlite:///relay-data/relay.db

run: relay

relay: $(STAMP)
	$(PY) -m relay --host $(HOST) --port $(PORT) --store $(STORE)

demo: $(STAMP)
	$(PY) -m crdtsync demo

lint: $(STAMP)
	$(VENV)/bin/ruff check crdtsync relay tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict crdtsync relay

# pytest exits 5 when it collects no tests: not a failure of the build.
pytest: $(STAMP)
	$(VENV)/bin/pytest; status=$$?; \
	  if [ $$status -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$status

test: lint typecheck pytest

bench: $(STAMP)
	$(PY) -m benchmarks --quick

bench-full: $(STAMP)
	$(PY) -m benchmarks --full

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis demo-data
