# The few verbs people use: demo, test, bench, lint. Each sets up .venv itself on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
NATIVE := tracer/_native.json

.PHONY: demo test bench lint setup clean

$(STAMP): pyproject.toml setup.py scripts/setup.sh
	PYTHON=$(PYTHON) bash scripts/setup.sh
	touch $(STAMP)

# The tracer's hot path compiled with mypyc (setup.py, docs/performance.md), rebuilt when a tracer
# source changed so that tests, benchmarks and the demo never run an old build.
$(NATIVE): $(wildcard tracer/*.py) setup.py | $(STAMP)
	$(PY) setup.py -q build_ext --inplace

setup: $(STAMP) $(NATIVE)

demo: $(STAMP) $(NATIVE)
	$(VENV)/bin/ordertrail demo $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check tracer collectors detectors ordertrail tests bench
	$(VENV)/bin/ruff format --check tracer collectors detectors ordertrail tests bench
	$(VENV)/bin/mypy

test: lint $(NATIVE)
	$(PY) -m pytest -q -p no:cacheprovider $(ARGS)

bench: $(STAMP) $(NATIVE)
	$(PY) -m bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info build tracer/*.so $(NATIVE)
