# Two commands: `make demo` runs the product, `make test` runs the whole suite. Both install
# what they need into .venv and start the embedded PostgreSQL and Redis under .devstack/.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install test lint format up demo bench chaos stack-stop clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

lint: install
	ruff check .
	ruff format --check .
	lint-imports

format: install
	ruff format .
	ruff check --fix .

# The suite runs against its own embedded servers (.devstack/test), never the ones `make up`
# uses; set DATABASE_URL and REDIS_URL to run it against other servers instead.
TEST_STACK ?= .devstack/test
# With DATABASE_URL set, everything runs against the servers it names (no embedded stack).
on_stack = $(if $(DATABASE_URL),,python -m deploy.devstack run --root $(1) --)
test chaos bench: export DJANGO_SECRET_KEY ?= test-only-secret-key

# The whole suite, then a small chaos run: a regression in crash safety fails the build.
test: lint
	$(call on_stack,$(TEST_STACK)) python -m pytest $(PYTEST_ARGS); \
	status=$$?; if [ $$status -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$status
	$(call on_stack,.devstack/chaos-ci) python manage.py chaos --winners 10000 --stripe-winners 300 --kills 5 --seed 7

# The proof: `make chaos ARGS="--seed 2 --json"`, `make bench ARGS="--json"`.
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
