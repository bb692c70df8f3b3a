# Two commands on a fresh machine with only Python >= 3.11: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export FEEDBACK_PIPELINE_HOME ?= $(CURDIR)/.feedback_home
# dagster.yaml is read from $DAGSTER_HOME only: point it into the home folder and link
# the repo's dagster.yaml there, so run/event storage lives beside the warehouse.
export DAGSTER_HOME ?= $(FEEDBACK_PIPELINE_HOME)/dagster

.PHONY: install label-studio dagster-home demo test ui ui-check chromium bench clean
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

install: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# Label Studio for the tests, in its own venv: its pins would fight Dagster's (never in $(VENV)).
LS_VENV := .venv-labelstudio
label-studio: $(LS_VENV)/.installed

$(LS_VENV)/.installed: requirements-labelstudio.lock
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LS_VENV)/bin/python -m pip install --quiet -r requirements-labelstudio.lock
	touch $@

dagster-home:
	mkdir -p $(DAGSTER_HOME)
	ln -sf $(CURDIR)/dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: install dagster-home
	$(BIN)/feedback-pipeline demo

# The import contracts first (stages flow one way: pyproject.toml), then the suite.
test: install label-studio
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q --durations=15

ui: install dagster-home
	$(BIN)/dagster dev -w workspace.yaml

# Headless Chromium (Debian package) for ui-check; installed only when missing.
chromium:
	test -x $(CHROMIUM) || ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)

# The UI as a person sees it; screenshots in $(FEEDBACK_PIPELINE_HOME)/exports/ui_check/.
ui-check: install dagster-home chromium
	$(BIN)/python -m feedback_pipeline_tests.ui_check --home $(FEEDBACK_PIPELINE_HOME) --prepare

bench: install
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/scoring.py
	$(BIN)/python benchmarks/judge.py
	$(BIN)/python benchmarks/coverage.py
	$(BIN)/python benchmarks/impact_power.py
	$(BIN)/python benchmarks/end_to_end.py
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/sources.py
	$(BIN)/python benchmarks/label_efficiency.py
	$(BIN)/python benchmarks/parallel_backfill.py

clean:
	rm -rf $(FEEDBACK_PIPELINE_HOME)
