# Two commands do all set-up on a fresh machine (Python 3.11+):
#   make demo   -- create .venv, install, run the main job on the embedded digits data
#   make test   -- create .venv, install, run the test suite (fast profile)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint bench docs clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# the distribution was renamed from pfc-toolkit: drop an old install of the same packages
	-$(BIN)/python -m pip uninstall -q -y pfc-toolkit 2>/dev/null
	$(BIN)/python -m pip install -q -e ".[dev,vision]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pfc demo --force

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python benchmarks/metrics.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

docs: $(STAMP)
	$(BIN)/python -m sphinx -b html -q docs docs/_build/html
	@echo "documentation: docs/_build/html/index.html"
