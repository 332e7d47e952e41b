# Every target installs what it needs into a project-local virtual environment (.venv).
# The CPU build of torch is pinned here (it lies on disk on the project's machines);
# setup.py keeps a version range for users.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0

.PHONY: quick test docs paper bench clean

$(VENV)/.installed: setup.py settings.ini
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[test,docs]"
	touch $@

quick: $(VENV)/.installed  ## quick paper reproduction on the built-in toy problem
	$(VENV)/bin/inferno-paper --quick --out paper_results_quick

test: $(VENV)/.installed   ## the test suite
	$(PY) -m pytest -q tests

# warnings are errors; -E reads every page again, so that no warning hides in a cached page
docs: $(VENV)/.installed   ## the documentation site (docs/ and the docstrings) in docs/_build/html
	$(PY) -m sphinx -W --keep-going -E -b html -q docs docs/_build/html

paper: $(VENV)/.installed  ## the full reproduction (hours on 2 cores)
	$(VENV)/bin/inferno-paper --out docs/results

bench: $(VENV)/.installed
	$(PY) speed/run_all.py

clean:
	rm -rf $(VENV) *.egg-info paper_results_quick docs/_build
