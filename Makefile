# effopt: the two commands a newcomer types are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
PYTEST_ARGS ?=

.PHONY: run test test-fast lint bench install install-dev lock clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(UV): | $(PY)
	$(PY) -m pip install -q --disable-pip-version-check uv

# Runtime set (requirements.txt), everything pinned by constraints.txt.
$(VENV)/.installed-runtime: requirements.txt constraints.txt | $(UV)
	$(UV) pip install --python $(PY) -q -r requirements.txt -c constraints.txt
	touch $@

# effopt itself, in editable mode: .venv/bin/effopt is the command line, and the airflow.plugins entry
# point registers the plugin.
$(VENV)/.installed-effopt: pyproject.toml $(VENV)/.installed-runtime
	$(UV) pip install --python $(PY) -q --no-deps -e .
	touch $@

# Plus the test, lint and benchmark tools.
$(VENV)/.installed-dev: $(VENV)/.installed-runtime requirements-dev.txt
	$(UV) pip install --python $(PY) -q -r requirements.txt -r requirements-dev.txt -c constraints.txt
	touch $@

install: $(VENV)/.installed-effopt
install-dev: $(VENV)/.installed-dev $(VENV)/.installed-effopt

## run: start Airflow standalone with effopt's bundle and plugin on http://localhost:8080
run: install
	$(VENV)/bin/effopt standalone

## test: the whole suite, end-to-end tests against real services included
test: install-dev
	$(PY) -m pytest $(PYTEST_ARGS)

## test-fast: everything except the slow end-to-end tests
test-fast: install-dev
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .

bench: install-dev
	for b in bench/*_bench.py; do echo "== $$b"; PYTHONPATH=plugins:. $(PY) $$b || exit 1; done

## lock: re-pin every transitive dependency after changing requirements*.txt
lock: | $(UV)
	$(UV) pip compile -q --python-version 3.11 requirements.txt requirements-dev.txt -o constraints.txt

clean:
	rm -rf $(VENV) .airflow .pytest_cache .ruff_cache
