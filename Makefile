# exportd — everything a developer or CI runs goes through these targets.
# `make up` runs exportd; `make test` checks and tests it. Nothing hidden.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install system-packages up test check format clean soak bench bench-quick screenshots

# Creates .venv and installs exportd (editable) with its test tools.
# Re-runs only when pyproject.toml changes.
install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "exportd needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $(STAMP)

# Runs exportd on this machine: embedded Postgres under ./.exportd unless
# EXPORTD_DATABASE_URL is set.
up: install
	$(BIN)/exportd up

# The programs the tests run for real (nginx, curl, wget, aria2c, chromium,
# systemd-analyze): installed with apt-get as root, else named in one line.
system-packages:
	@bash .ci/system-packages

# Worker processes for the test suite (pytest-xdist): most tests wait on
# PostgreSQL, subprocesses and sockets, so the suite overlaps well even on two
# cores. Each worker has its own PostgreSQL server and SeaweedFS. Tests are
# handed out one at a time (--maxschedchunk 1), slow ones first (see
# tests/conftest.py), so no worker ends up with a queue of long tests while
# the other idles. `make test PYTEST_WORKERS=0` runs in this one process.
PYTEST_WORKERS ?= 2

# Lint, format and type checks first, then the whole test suite.
test: install system-packages
	$(MAKE) --no-print-directory check
	$(BIN)/pytest -n $(PYTEST_WORKERS) --maxschedchunk 1

# The fault and fuzz suites at full size (make test runs them small):
# 1000 exports under SIGKILLs, 200 schemathesis examples per operation.
soak: install
	EXPORTD_SOAK_JOBS=1000 EXPORTD_FUZZ_EXAMPLES=200 $(BIN)/pytest tests/faults tests/fuzz

# Rewrites docs/screenshots/*.png (the README shows them) from a real
# exportd in Chromium. `make test` takes and checks them in a temporary
# directory and leaves the tree as it was.
screenshots: install system-packages
	EXPORTD_WRITE_SCREENSHOTS=1 $(BIN)/pytest tests/browser/test_screenshots.py

# Side-by-side benchmarks (bench/): results into docs/benchmarks.md and
# bench/results/latest.json. Needs wrk, curl and nginx (like the tests).
bench: install
	$(BIN)/python -m bench.run

# A few minutes, every benchmark at a small size; docs are left alone.
bench-quick: install
	$(BIN)/python -m bench.run --quick

check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) dist build .mypy_cache .ruff_cache
