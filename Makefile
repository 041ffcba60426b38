# opskit's own tasks. `make demo` and `make test` are the two set-up commands of the README.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEMO   := build/demo
# What the real-systemd containers install offline (tests/real_systemd/wheelhouse.sh).
WHEELHOUSE ?= build/wheelhouse
# Containers booted at once by the real-systemd tests that assert no timing; the timing
# ones (marked `timing`, see tests/real_systemd/conftest.py) always run alone afterwards.
CONTAINERS ?= 2

.PHONY: help demo test lint typecheck unit wheelhouse bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[demo]'
	touch $@

$(VENV)/.test: $(VENV)/.base pyproject.toml
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.base  ## generate every artifact for the bundled example app into build/demo
	$(PY) bench/demo.py $(DEMO)

lint: $(VENV)/.test  ## ruff
	$(VENV)/bin/ruff check opskit tests bench
	$(VENV)/bin/ruff format --check opskit tests bench

typecheck: $(VENV)/.test  ## mypy, strict on opskit/
	$(VENV)/bin/mypy

unit: $(VENV)/.test  ## the fast tests only
	$(PY) -m pytest -m 'not systemd and not servers and not pip' -q

# Refilled when opskit's dependencies, the script's download list or the corpus's pins
# change (the script decides by a stamp of all three), skipped when current; the one step
# that needs the registry.
$(WHEELHOUSE)/.filled-for: pyproject.toml tests/real_systemd/wheelhouse.sh tests/real_systemd/corpus.txt
	OPSKIT_WHEELHOUSE=$(WHEELHOUSE) bash tests/real_systemd/wheelhouse.sh

wheelhouse: $(WHEELHOUSE)/.filled-for  ## download the wheels the real-systemd containers install offline

# Two runs: the container tests that assert no timing, $(CONTAINERS) at a time, then the
# rest of the suite one test at a time (the timing tests, servers, pip, the fast tests).
# Both always run; the harness's time budget counts from the start of the first, and the
# venv of this checkout's opskit that the containers use is built once for both.
test: lint typecheck $(WHEELHOUSE)/.filled-for  ## ruff, mypy and the whole suite (real systemd, servers, pip included)
	export OPSKIT_WHEELHOUSE=$(WHEELHOUSE) OPSKIT_TEST_STARTED=$$(date +%s) \
	  OPSKIT_TEST_SHARED=$$(mktemp -d); status=0; \
	$(PY) -m pytest -q -n $(CONTAINERS) -m 'systemd and not timing' tests/real_systemd || status=1; \
	$(PY) -m pytest -q -m 'not (systemd and not timing)' || status=1; \
	rm -rf "$$OPSKIT_TEST_SHARED"; exit $$status

bench: $(VENV)/.test  ## run every bench/bench_*.py; each records its result with --write under docs/benchmarks/
	@for script in bench/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:  ## remove the venv and build output
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
