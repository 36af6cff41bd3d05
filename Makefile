# Every target bootstraps .venv from nothing, so a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SOURCES := pyproject.toml setup.py native/_evaluator_c.pyx

.PHONY: demo test test-pure bench lint typecheck docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Editable install with the test extras; builds the Cython evaluator in place.
$(VENV)/.installed: $(PY) $(SOURCES)
	$(PIP) install --quiet -e '.[test,lint]'
	@touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/actorflow demo

# The whole suite twice: with the compiled evaluator (and a test that fails if it did not
# load), then with the pure-Python twin.
test: $(VENV)/.installed
	ACTORFLOW_REQUIRE_NATIVE=1 $(PY) -m pytest
	ACTORFLOW_NO_EXTENSIONS=1 $(PY) -m pytest -q

bench: $(VENV)/.installed
	$(VENV)/bin/actorflow bench

# The documentation site (mkdocs, API reference from docstrings) into site/; builds offline.
$(VENV)/.docs: $(VENV)/.installed
	$(PIP) install --quiet -e '.[docs]'
	@touch $@

docs: $(VENV)/.docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check actorflow tests bench examples
	$(VENV)/bin/ruff format --check actorflow tests bench examples
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info actorflow/graph/*.so native/*.c .pytest_cache .mypy_cache
