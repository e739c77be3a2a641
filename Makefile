# Two commands on a fresh machine: `make demo` and `make test`.
# Both create (or reuse) .venv/ and install the project into it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint format clean browser perf

$(STAMP): pyproject.toml setup.py tracer/backends/_fasttick.c tracer/_sockpeek.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m circuit demo -o circuit-runs/demo --force

test: $(STAMP) browser perf
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q

# chromium for the report's browser test (tests/integration/test_report.py): installed via
# apt-get when missing and we are root; otherwise that one test skips.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium not installed: the report's browser test will be skipped"

# perf for the kernel's side of the GIL tests (tests/integration/test_gil_truth.py: futex
# waits): installed via apt-get when missing and we are root; otherwise those
# tests compare with the threads' own clocks instead.
perf:
	@command -v perf >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null; } \
	  || echo "perf not installed: the GIL tests will use the threads' own clocks instead"

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) build *.egg-info circuit-runs
