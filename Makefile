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

format: install
	ruff format .
	ruff check --fix .

# The suite runs against its own embedded servers (.devstack/test), never the ones `make up`
# uses; set DATABASE_URL and REDIS_URL to run it against other servers instead.
TEST_STACK ?= .devstack/test
test: lint
	DJANGO_SECRET_KEY=test-only-secret-key \
	$(if $(DATABASE_URL),python -m pytest $(PYTEST_ARGS),python -m deploy.devstack run --root $(TEST_STACK) -- python -m pytest $(PYTEST_ARGS)); \
	status=$$?; if [ $$status -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$status

up: install
	python -m deploy.run up

demo: install
	python -m deploy.run demo

stack-stop:
	python -m deploy.devstack stop
	python -m deploy.devstack stop --root $(TEST_STACK)

clean: stack-stop
	rm -rf $(VENV) .devstack
