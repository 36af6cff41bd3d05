# Every target bootstraps .venv from nothing, so a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SOURCES := pyproject.toml setup.py native/_evaluator_c.pyx

.PHONY: demo test test-py test-versions test-pure test-packaging test-faults soak bench bench-retention lint typecheck docs clean

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
# load), then with the pure-Python twin. The chaos and soak runs (marker "reliability": 12
# engine SIGKILLs, a 2-minute soak) test processes, not the evaluator: they run once.
test: $(VENV)/.installed
	ACTORFLOW_REQUIRE_NATIVE=1 $(PY) -m pytest
	ACTORFLOW_NO_EXTENSIONS=1 $(PY) -m pytest -q -m "not reliability"

# The other supported interpreters: `make test` runs on $(PYTHON) (3.11 here); each of these
# gets its own venv (.venv-3.12, ...) and the compiled pass, less the "reliability" runs
# (processes, not the interpreter; they stay in `make test`). An interpreter is pyenv's newest
# X.Y.*, else pythonX.Y on PATH. `make test-versions` runs them all and reports a missing one
# loudly (it does not fail: a machine may lack one); `make test-py V=3.13` runs one.
PYTHONS := 3.12 3.13
find-python = $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$(1).*/bin/python$(1) 2>/dev/null \
	| sort -V | tail -n 1 | grep . || command -v python$(1) || true)

.venv-%/.installed: $(SOURCES)
	@py="$(call find-python,$*)"; test -n "$$py" || { echo "no Python $* found" >&2; exit 1; }; \
	echo "Python $*: $$py"; "$$py" -m venv .venv-$*
	.venv-$*/bin/python -m pip install --quiet --upgrade pip
	.venv-$*/bin/python -m pip install --quiet -e '.[test]'
	@touch $@

ifneq ($(filter test-py,$(MAKECMDGOALS)),)
ifndef V
$(error usage: make test-py V=3.12)
endif
endif

test-py: .venv-$(V)/.installed
	.venv-$(V)/bin/python --version
	ACTORFLOW_REQUIRE_NATIVE=1 .venv-$(V)/bin/python -m pytest -q -m "not reliability"

test-versions:
	@failed=""; missing=""; \
	for v in $(PYTHONS); do \
	  if [ -z "$(call find-python,$$v)" ]; then missing="$$missing $$v"; continue; fi; \
	  $(MAKE) --no-print-directory test-py V=$$v || failed="$$failed $$v"; \
	done; \
	for v in $$missing; do \
	  echo "!!! Python $$v is supported but not installed here: its compiled pass did NOT run"; \
	done; \
	if [ -n "$$failed" ]; then echo "!!! compiled pass failed on Python$$failed"; exit 1; fi

# Packaging (a few minutes, left out of `make test`; CI runs it): from a clean copy of the tree,
# `python -m build` makes the sdist and a wheel from it, which installs in a fresh venv and runs
# a workflow on the compiled evaluator; `CC=/bin/false pip install` of the unpacked sdist falls
# back to the pure-Python one and says so once. Offline: builds run without isolation.
$(VENV)/.packaging: $(VENV)/.installed
	$(PIP) install --quiet --group packaging
	@touch $@

test-packaging: $(VENV)/.packaging
	$(PY) -m pytest -q -m packaging tests/test_packaging.py

# The long form of the fault suite: worker and storage faults, then 200 SIGKILLs of the
# engine process with the invariants checked (report in bench/results/chaos-latest.json).
test-faults: $(VENV)/.installed
	$(PY) -m pytest -q tests/workers/test_faults.py tests/store/test_storage_faults.py
	$(PY) -m tests.chaos --kills 200 --runs 800 --json bench/results/chaos-latest.json

# The 30-minute soak: steady triggers, a worker SIGKILLed every 5 s (bench/results/soak-latest.json).
soak: $(VENV)/.installed
	$(PY) -m tests.soak --minutes 30 --json bench/results/soak-latest.json

bench: $(VENV)/.installed
	$(PY) -m bench

# R1, a few minutes: data.mdb over 200,000 runs with a 10 s retention, beside keep-forever
# (bench/results/retention-latest.json, then docs/benchmarks.md).
bench-retention: $(VENV)/.installed
	$(PY) -m bench.retention
	$(PY) -m bench --render

# The documentation site (mkdocs, API reference from docstrings) into site/; builds offline.
$(VENV)/.docs: $(VENV)/.installed
	$(PIP) install --quiet -e '.[docs]'
	@touch $@

docs: $(VENV)/.docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check actorflow tests bench examples
	$(VENV)/bin/ruff format --check actorflow tests bench examples
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .venv-3.* build dist *.egg-info actorflow/graph/*.so native/*.c .pytest_cache .mypy_cache
