# Two commands for a fresh machine: `make run` (set up, then train, export, verify and report)
# and `make test` (set up, then the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv

$(VENV)/.installed: pyproject.toml client/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c constraints.txt -e ./client -e '.[test]'
	touch $@

.PHONY: setup run test test-fast bench
setup: $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/python -m job

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest

# The edit loop: every test but those marked slow (whole job runs, training on the real MNIST, new environments).
test-fast: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -m "not slow"

bench: $(VENV)/.installed
	$(VENV)/bin/python -m bench
