# Two commands do all set-up on a fresh machine with python3 and make: `make report` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# two workers (pytest-xdist; bare pytest is the fast tier, pyproject's addopts): the default tier took
# 202 s in one process from a fresh clone on this 2-core machine, 137 s in two
PYTEST_ARGS ?= -n 2
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: report test test-slow test-browser bench check figures lint docs clean

# Re-install only when the project's metadata changed (the install is editable: code edits need none).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@if $(BIN)/python -m pip show arviz-plots >/dev/null 2>&1; then \
	  echo "arviz_plots is installed in $(VENV): it breaks 'import pymc' (see DEVELOPERS.md)"; exit 1; fi
	# bytecode for our own modules, as a non-editable pip install writes it: with
	# PYTHONDONTWRITEBYTECODE set (this machine sets it) every varcomp run compiled them, ~0.1 s
	$(BIN)/python -m compileall -q analyses models src
	touch $(STAMP)

# The documentation's tools (Sphinx, myst-nb, ...) in a second stamp, so `make test` does not pay for them.
DOCS_STAMP := $(VENV)/.docs-stamp
$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,docs]'
	touch $(DOCS_STAMP)

report: $(STAMP)
	$(BIN)/varcomp fit dyestuff --model all --out reports/dyestuff

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# the report in a real browser (Debian's chromium, installed if missing): console errors, images,
# sections; screenshots in pytest's tmp folder
test-browser: $(STAMP)
	test -x /usr/bin/chromium || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }
	$(BIN)/python -m pytest -m browser

lint: $(STAMP)
	$(BIN)/ruff check .

check: $(STAMP)
	$(BIN)/varcomp check --quick --out reports/checks

figures: $(STAMP)
	$(BIN)/varcomp figures --out reports/figures

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_univariate.py
	$(BIN)/python benchmarks/bench_multivariate.py --json benchmarks/results_mv.json
	$(BIN)/python benchmarks/bench_mixed.py
	$(BIN)/python benchmarks/bench_scale.py
	$(BIN)/python benchmarks/bench_latency.py

# The site in docs/_build/html, warnings as errors; every tutorial notebook is executed (docs/conf.py)
docs: $(DOCS_STAMP)
	rm -rf docs/_build/html docs/api/generated
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) reports .pytest_cache docs/_build docs/api/generated
