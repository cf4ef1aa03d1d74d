# The few verbs people use: demo, test, bench, lint. Each sets up .venv itself on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench lint setup clean

$(STAMP): pyproject.toml scripts/setup.sh
	PYTHON=$(PYTHON) bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ordertrail demo $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check tracer collectors detectors ordertrail tests bench
	$(VENV)/bin/ruff format --check tracer collectors detectors ordertrail tests bench
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q -p no:cacheprovider $(ARGS)

bench: $(STAMP)
	$(PY) -m bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
