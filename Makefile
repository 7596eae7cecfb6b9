# chordload: `make demo` runs a real load on SQLite; `make test` runs the checks and the whole
# suite; `make unit` the fast unit layer alone (no services); `make check` lint, format, types
# and import contracts; `make bench` the benchmark (docs/benchmarks.md; BENCH_ARGS='--rows
# 100000' to change it); `make lock` re-pins constraints.txt after a change of pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PY_SOURCES := shared coordinator workers tests bench flowerconfig.py

.PHONY: demo test unit check install services bench lock clean

# installs the versions CI ran: constraints.txt pins every package pyproject.toml admits
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,dev,ui]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/chordload demo

check: $(STAMP)
	$(BIN)/ruff format --check $(PY_SOURCES)
	$(BIN)/ruff check $(PY_SOURCES)
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

services:
	bash scripts/ensure-services.sh

# The suite mostly waits on services, Celery and deliberate outages, so it runs as
# TEST_PROCS pytest sessions side by side (pytest-xdist), each with its own databases, Redis
# prefix, queue and workers; a file's tests stay in one session (they share its fixtures).
TEST_PROCS ?= 2

test: check services
	$(BIN)/python -m pytest -n $(TEST_PROCS) --dist loadfile $(PYTEST_ARGS)

bench: $(STAMP) services
	$(BIN)/python -m bench.run $(BENCH_ARGS)

lock: $(STAMP)
	$(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links \
		--extra test --extra dev --extra ui --output-file constraints.txt pyproject.toml

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
