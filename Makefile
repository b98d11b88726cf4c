# Two commands for a fresh machine: `make setup && .venv/bin/lenet-mnist` (set up, then train, export, verify and
# report, ending with the job's own exit status, which `make run` would turn into make's 2) and `make test` (set up,
# then the test suite). `make test` also installs the browser app's pinned npm packages (web/node_modules).
PYTHON ?= python3
VENV ?= .venv

$(VENV)/.installed: pyproject.toml client/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	@echo "Installing the pinned packages into $(VENV): torch is most of it (minutes on a first install; the CUDA"
	@echo "build is about 6 GB). pip shows each download; the next runs start at once."
	torch_source=$$($(PYTHON) tools/torch_source.py) && \
	$(VENV)/bin/pip install -c constraints.txt $$torch_source -e ./client -e '.[test]'
	touch $@

# npm ci rewrites node_modules/.package-lock.json: it marks an install that matches web/package-lock.json.
web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	npm ci --prefix web --no-audit --no-fund --loglevel=error

.PHONY: setup run test test-fast lint bench web
setup: $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/python -m job

# One pytest worker per core (pytest-xdist), each taking whole files, so that a module's fixtures (a trained run,
# an MLflow server, a browser) are made once (a session's, once per worker). Most of a test's time is one core's
# Python (exports, plots), so two workers on two cores take about 3/4 of the time of one.
PYTEST = $(VENV)/bin/python -m pytest -n auto --dist loadfile

test: $(VENV)/.installed web/node_modules/.package-lock.json
	$(PYTEST)

# The edit loop: every test but those marked slow (whole job runs, training on the real MNIST, new environments).
test-fast: $(VENV)/.installed web/node_modules/.package-lock.json
	$(PYTEST) -m "not slow"

# Style, complexity and argument-count rules (ruff), and types (mypy): both must stay clean (CI runs this).
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	$(VENV)/bin/python -m bench

# The browser app on http://127.0.0.1:8080/ with the run published in outputs/ (LENET_OUTPUT_DIR if set).
web: web/node_modules/.package-lock.json
	node web/serve.mjs
