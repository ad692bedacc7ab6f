# The two commands of the README, and the steps they stand on.
# Everything a clean clone needs is here: the virtualenv, the package, the Kafka jars.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test test-pure check chart-check setup broker-fetch clean

## demo: the main job: the whole pipeline end to end on the embedded broker
demo: setup
	$(BIN)/scoreline demo --requests 2000

## test: the type and lint checks, then the whole test suite, broker tests against a real Apache Kafka
test: check chart-check broker-fetch
	$(BIN)/pytest

## check: mypy (strict on the pure packages) and ruff, in seconds
check: setup
	$(BIN)/mypy --strict schemas routing workflows
	$(BIN)/mypy streams scoreline
	$(BIN)/ruff check .

## chart-check: render the Helm chart with its default and production values into build/chart/ and validate them
## (the pinned Helm is built from its Go module on first use: scripts/install_helm.sh)
chart-check: setup
	$(BIN)/python scripts/chart_check.py

## test-pure: only the tests that need no broker (milliseconds each)
test-pure: setup
	$(BIN)/pytest -m "not kafka"

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

broker-fetch: setup
	$(BIN)/scoreline broker fetch

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
