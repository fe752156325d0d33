# Two commands: `make demo` runs the product, `make test` runs the whole suite. Both install
# what they need into .venv and start the embedded PostgreSQL and Redis under .devstack/.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Every dependency pinned with hashes: main.lock is what production runs (the Dockerfile
# installs it), dev.lock adds the dev extra on top of the same pins. A change to either file
# changes the stamp's name, so the next command reinstalls.
LOCKS := requirements/main.lock requirements/dev.lock
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCKS) | cksum | cut -d' ' -f1)
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install lock browser test lint format up demo bench chaos stack-stop clean

# Everything the install says goes to standard error: on a fresh clone `make bench ARGS=--json`
# installs first, and its standard output must carry the JSON object alone.
$(STAMP): pyproject.toml $(LOCKS)
	@echo "installing the project and its pinned dependencies into $(VENV)" >&2
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) >&2
	@$(BIN)/python -m pip install --quiet --upgrade pip >&2
	@$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.lock >&2
	@$(BIN)/python -m pip install --quiet --no-deps -e . >&2
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

# Re-pin after changing dependencies in pyproject.toml; LOCK_ARGS=--upgrade moves every pin to
# the newest release allowed.
COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --no-emit-find-links --no-emit-index-url $(LOCK_ARGS)
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet 'pip-tools==7.6.2'
	$(COMPILE) -o requirements/main.lock pyproject.toml
	$(COMPILE) --extra dev -c requirements/main.lock -o requirements/dev.lock pyproject.toml

# The deployment checks run with production settings: DEBUG off and a fresh key of the
# strength `check --deploy` asks for (`make test` exports a short one for the suite).
PRODUCTION = DEBUG=false DJANGO_SECRET_KEY=$$(python -c 'import secrets; print(secrets.token_urlsafe(50))')

lint: install
	ruff check .
	ruff format --check .
	lint-imports
	python -m deploy.render --check
	$(PRODUCTION) mypy
	$(PRODUCTION) python manage.py check --deploy --fail-level WARNING
	$(PRODUCTION) python manage.py spectacular --validate --fail-on-warn --file /dev/null
	$(PRODUCTION) $(call on_stack,$(TEST_STACK)) python manage.py makemigrations --check --dry-run

format: install
	ruff format .
	ruff check --fix .

# The suite runs against its own embedded servers (.devstack/test), never the ones `make up`
# uses; set DATABASE_URL and REDIS_URL to run it against other servers instead.
TEST_STACK ?= .devstack/test
# With DATABASE_URL set, everything runs against the servers it names (no embedded stack).
on_stack = $(if $(DATABASE_URL),,python -m deploy.devstack run --root $(1) --)
test chaos bench: export DJANGO_SECRET_KEY ?= test-only-secret-key

# The browser tests drive Debian's Chromium through Playwright from PyPI; Playwright's own
# browser download cannot work offline, so it is never used. CI runs as root with apt.
CHROMIUM ?= /usr/bin/chromium
browser:
	test -x $(CHROMIUM) || { apt-get update && apt-get install -y chromium; }

# The whole suite, then a small chaos run: a regression in crash safety fails the build. Last,
# a quick bench prints the trend figures of this build; it checks nothing noise could break.
test: lint browser
	$(call on_stack,$(TEST_STACK)) python -m pytest $(PYTEST_ARGS); \
	status=$$?; if [ $$status -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$status
	$(call on_stack,.devstack/chaos-ci) python manage.py chaos --winners 50000 --stripe-winners 300 --kills 5 --seed 7
	$(call on_stack,.devstack/bench-ci) python manage.py bench --quick

# The proof: `make chaos ARGS="--seed 2 --json"`, `make bench ARGS="--repeat 3 --json"`.
# Not echoed: with --json, standard output carries the JSON object alone.
chaos: install
	@$(call on_stack,.devstack/proof) python manage.py chaos $(ARGS)

bench: install
	@$(call on_stack,.devstack/proof) python manage.py bench $(ARGS)

up: install
	python -m deploy.run up

demo: install
	python -m deploy.run demo

# Stop every embedded server this checkout started (make up's, the tests', the proofs').
stack-stop:
	for root in .devstack .devstack/*/; do python -m deploy.devstack stop --root $$root; done

clean: stack-stop
	rm -rf $(VENV) .devstack
