# Blog API: `make run` starts the whole stack, `make test` runs every test.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTHON ?= python3
# The locks (scripts/locks.py): the runtime's, what `make run` adds, what `make test` adds
# (tracing, which production installs to trace, and the test tools).
RUN_LOCKS := requirements.txt requirements-dev.txt
TEST_LOCKS := $(RUN_LOCKS) requirements-tracing.txt requirements-test.txt
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
# The tool `make lock` compiles the locks with (never needed to install them).
UV_VERSION := 0.13.9

.PHONY: run test lint typecheck pytest test-faults-long openapi clean help venv debian-tools test-tools \
	bench bench-quick bench-deps lock check-locks

help:
	@echo "make run   - set up and start the API on http://127.0.0.1:5000 (WEB_PORT)"
	@echo "make test  - set up and run lint, type checks and every test"
	@echo "make lock  - recompile the lock files after editing a requirements*.in"

# Exact versions, every file checked against its hash, then the package itself (its
# dependencies are in the locks already).
define install_locks
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet --require-hashes $(addprefix -r ,$(1))
	$(PIP) install --quiet --no-deps -e .
endef

$(RUN_STAMP): $(RUN_LOCKS) pyproject.toml
	$(call install_locks,$(RUN_LOCKS))
	touch $@

# Installing the test tools installs what `make run` needs too.
$(TEST_STAMP): $(TEST_LOCKS) pyproject.toml | check-locks
	$(call install_locks,$(TEST_LOCKS))
	touch $@ $(RUN_STAMP)

venv: $(TEST_STAMP)

# A lock whose .in changed since it was compiled fails `make test` before anything is installed.
check-locks:
	@$(PYTHON) scripts/locks.py check

# Recompile the locks (versions already locked stay unless UPGRADE=1).
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet uv==$(UV_VERSION)
	$(PY) scripts/locks.py compile --uv $(VENV)/bin/uv $(if $(UPGRADE),--upgrade)

# The browser, Postman and reverse-proxy tests: Debian's Chromium and nginx (installed when
# running as root, as CI does) and newman from tests/postman/package-lock.json.
NODE_STAMP := tests/postman/node_modules/.installed
# Each Debian tool the tests run, as <its path>:<its package>.
DEBIAN_TOOLS := /usr/bin/chromium:chromium /usr/sbin/nginx:nginx

$(NODE_STAMP): tests/postman/package.json tests/postman/package-lock.json
	cd tests/postman && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

debian-tools:
	@missing="$$(for tool in $(DEBIAN_TOOLS); do [ -x "$${tool%%:*}" ] || echo "$${tool#*:}"; done)"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi

test-tools: $(TEST_STAMP) $(NODE_STAMP) debian-tools

run: $(RUN_STAMP)
	VENV=$(VENV) ./scripts/run-stack.sh

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/ruff format --check src tests bench scripts
	$(VENV)/bin/lint-imports

typecheck: $(TEST_STAMP)
	$(VENV)/bin/mypy

# The fast tiers share the two cores; the integration tier (real workers as subprocesses) runs alone.
pytest: $(TEST_STAMP) test-tools
	$(VENV)/bin/pytest -n 2 -m "not integration" $(PYTEST_ARGS)
	$(VENV)/bin/pytest -m integration $(PYTEST_ARGS)

test: check-locks lint typecheck pytest

# The slow fault scenarios (full N, visibility-timeout redelivery), excluded from `make test`;
# their figures go to FAULT_FIGURES (see docs/RELIABILITY.md).
test-faults-long: $(TEST_STAMP)
	FAULT_LONG=1 $(VENV)/bin/pytest -m long tests/faults $(PYTEST_ARGS)

# Benchmarks (never part of `make test`): wrk and Postfix's smtp-sink (the fan-out's SMTP
# server) from Debian when root and missing, plus the Python tools in bench/requirements.txt.
# Postfix is installed unconfigured ("No configuration"), so its mail service never starts.
# Results go to bench/RESULTS.md.
bench-deps: $(RUN_STAMP)
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

openapi: $(RUN_STAMP)
	for v in 1 2; do FLASK_ENV=testing $(VENV)/bin/flask --app blog_api openapi write \
		--config-prefix V$${v}_ docs/openapi/v$$v.json; done

clean:
	rm -rf $(VENV) instance .pytest_cache .mypy_cache .ruff_cache tests/postman/node_modules
