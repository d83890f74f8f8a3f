# `make repro` runs the pipeline; `make test` runs lint and the test suite. Both set up .venv first.
# `make notebook` runs the teaching notebook's exact configuration as a DVC experiment.
# `make bench` measures training and preprocessing speed (benchmarks/speed.py); BENCH_ARGS=--quick: a smoke run.
# `make plots` draws the plots (`make plots REVS=HEAD~1` compares revisions); `make report` writes report.html.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# DVC's plots page with Vega inlined, named by `plots.html_template` in .dvc/config (see tools/plots_template.py).
PLOTS_TEMPLATE := .dvc/plots_template.html
# DVC stages run `python -m stages.<name>`: the venv's python must come first on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install install-dev browser repro notebook bench plots report test lint clean

install: $(VENV)/.installed $(PLOTS_TEMPLATE)

install-dev: $(VENV)/.installed-dev

# The pinned requirements, then the spokenwords library itself, editable (its console scripts: spokenwords-predict and
# spokenwords-predict-onnx).
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --disable-pip-version-check --no-deps -e .
	touch $@

# Made from the pinned vl-convert-python, never committed: remade when the venv or the script changes, or when missing
# (DVC then fails with a confusing "HTML template has to contain '{plot_divs}'").
$(PLOTS_TEMPLATE): $(VENV)/.installed tools/plots_template.py
	$(BIN)/python -m tools.plots_template

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(BIN)/pip install --disable-pip-version-check -r requirements-dev.txt
	touch $@

repro: install
	$(BIN)/dvc repro

# The teaching notebook's exact run (M5, its hyperparameters) as a DVC experiment named "notebook".
notebook: install
	$(BIN)/python -m tools.notebook

bench: install
	$(BIN)/python -m benchmarks.speed $(BENCH_ARGS)

plots: install
	$(BIN)/dvc plots $(if $(REVS),diff $(REVS),show)

report: install
	$(BIN)/python -m tools.report

# Headless Chromium for tests/e2e/test_plots_offline.py, installed when missing and running as root with apt-get (CI);
# elsewhere those tests skip and say why.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium fonts-dejavu-core; \
	fi

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# One pytest-xdist worker per core (TEST_WORKERS=0: one process), each module's tests on one worker so that its
# shared project is built once; tests/conftest.py gives the workers one OpenMP thread each.
TEST_WORKERS ?= auto

test: lint install browser
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
