# Two commands for a new user: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
# Django 6 needs Python 3.12+, and pgserver (embedded PostgreSQL) ships wheels up to 3.12:
# take a 3.12 interpreter from PATH or pyenv,
# unless PYTHON is given.
PYTHON ?= $(shell for p in python3.12 $$(ls -d $$HOME/.pyenv/versions/3.12*/bin/python3 2>/dev/null | sort -rV) python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1 && { command -v $$p; break; }; done)

.PHONY: run test install lint bench demo services-test clean-data

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.12 is required (install it, or set PYTHON=/path/to/python3.12)"; exit 1; }
	@test -x $(PY) || { echo "Creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

install: $(VENV)/.installed

## Start the whole system (web, worker, beat, database, demo data) on embedded defaults.
run: install
	$(PY) manage.py runcdp

## Run the whole test suite on a throw-away database.
test: install
	@$(PY) -m cdp.browser --ensure
	$(PY) -m pytest -p no:cacheprovider --create-db $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here"; exit 1; fi; exit $$rc

## The `services` tests against real PostgreSQL and Redis (what CI runs after `make test`).
services-test: install
	DATABASE_URL=$${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres} \
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/0} \
	$(PY) -m pytest -p no:cacheprovider --create-db -m services $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no services tests collected: that is a failure here"; exit 1; fi; exit $$rc

lint: install
	$(VENV)/bin/ruff check .
	$(PY) manage.py makemigrations --check --dry-run

demo: install
	$(PY) manage.py generate_demo --profiles $${PROFILES:-20000} --days $${DAYS:-90} --seed $${SEED:-42}

bench: install
	@for f in bench/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

## Stop nothing, delete the embedded database, broker queue and generated secrets.
clean-data:
	rm -rf .cdp-data
