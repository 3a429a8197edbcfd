# Blog API: `make run` starts the whole stack, `make test` runs every test.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
PYTHON ?= python3

.PHONY: run test lint typecheck pytest test-faults-long openapi clean help venv chromium test-tools \
	bench bench-quick bench-deps

help:
	@echo "make run   - set up and start the API on http://127.0.0.1:5000"
	@echo "make test  - set up and run lint, type checks and every test"

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements-dev.txt -e .
	touch $(STAMP)

venv: $(STAMP)

# The browser and Postman tests: Debian's Chromium (installed when running as root, as CI does)
# and newman from tests/postman/package-lock.json.
NODE_STAMP := tests/postman/node_modules/.installed
CHROMIUM := /usr/bin/chromium

$(NODE_STAMP): tests/postman/package.json tests/postman/package-lock.json
	cd tests/postman && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

chromium:
	@if [ ! -x $(CHROMIUM) ] && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; \
	fi

test-tools: $(STAMP) $(NODE_STAMP) chromium

run: $(STAMP)
	VENV=$(VENV) ./scripts/run-stack.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The fast tiers share the two cores; the integration tier (real workers as subprocesses) runs alone.
pytest: $(STAMP) test-tools
	$(VENV)/bin/pytest -n 2 -m "not integration" $(PYTEST_ARGS)
	$(VENV)/bin/pytest -m integration $(PYTEST_ARGS)

test: lint typecheck pytest

# The slow fault scenarios (full N, visibility-timeout redelivery), excluded from `make test`;
# their figures go to FAULT_FIGURES (see docs/RELIABILITY.md).
test-faults-long: $(STAMP)
	FAULT_LONG=1 $(VENV)/bin/pytest -m long tests/faults $(PYTEST_ARGS)

# Benchmarks (never part of `make test`): wrk and Postfix's smtp-sink (the fan-out's SMTP
# server) from Debian when root and missing, plus the Python tools in bench/requirements.txt.
# Postfix is installed unconfigured ("No configuration"), so its mail service never starts.
# Results go to bench/RESULTS.md.
bench-deps: $(STAMP)
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && { apt-get install -y -qq wrk \
		|| { apt-get update -qq && apt-get install -y -qq wrk; }; }; } \
		|| { echo "wrk is missing: install it (Debian package wrk)"; exit 1; }
	@test -x /usr/sbin/smtp-sink || { [ "$$(id -u)" = 0 ] && { \
		echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postfix \
		|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends postfix; }; }; } \
		|| { echo "smtp-sink is missing: install it (Debian package postfix)"; exit 1; }
	$(PIP) install --quiet -r bench/requirements.txt

bench: bench-deps
	$(PY) bench/run.py --mode full

bench-quick: bench-deps
	$(PY) bench/run.py --mode quick --output bench/RESULTS-quick.md

openapi: $(STAMP)
	for v in 1 2; do FLASK_ENV=testing $(VENV)/bin/flask --app blog_api openapi write \
		--config-prefix V$${v}_ docs/openapi/v$$v.json; done

clean:
	rm -rf $(VENV) instance .pytest_cache .mypy_cache .ruff_cache tests/postman/node_modules
