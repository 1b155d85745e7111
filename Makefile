# profile-first: `make demo` runs the main job, `make test` installs what the tests need and runs them.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install demo test bench bench-10m docs

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/profile-first demo

test: install
	bash scripts/install-test-servers.sh
	$(PY) -m pytest -q

bench: install
	$(PY) -m benchmarks.run

# The same, with the growth measured from 1M to 10M spans (issue 17's targets; ~10 minutes more).
bench-10m: install
	$(PY) -m benchmarks.run --growth-to 10000000

docs: install
	$(PY) -m heuristics.docs
	$(PY) -m analyzer.config_docs
	$(PY) -m collectors.catalog_docs
