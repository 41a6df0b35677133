# jobsite: `make run` starts the platform, `make test` proves it. Both work on a bare machine:
# they install the locked dependencies with uv (bootstrapped if missing) and start embedded
# PostgreSQL and Redis when DATABASE_URL / REDIS_URL are unset.

SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo .venv-uv/bin/uv)
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: run test test-fast bench chaos lint format install bytecode clean help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

.venv-uv/bin/uv:
	python3 -m venv .venv-uv && .venv-uv/bin/pip install --quiet 'uv>=0.5'

.venv/.synced: pyproject.toml uv.lock | $(if $(findstring .venv-uv,$(UV)),.venv-uv/bin/uv)
	$(UV) sync --frozen --quiet --compile-bytecode
	@touch $@

install: .venv/.synced ## create .venv with the locked dependencies

# Every Python process the suite and `make run` start (xdist workers, manage.py, celery worker
# and beat) imports Django, Celery and the project: from source that costs ~1 s of CPU more per
# process (`manage.py check`: 1.65 s against 0.62 s). Python reads bytecode even where
# PYTHONDONTWRITEBYTECODE stops it writing any (set on the machines here), so it is written up
# front: the dependencies' by `uv sync --compile-bytecode`, the project's here (~0.3 s when
# nothing changed).
SOURCES := bench core devtools games jobsite monitoring ops referrals scheduler tests
bytecode: install
	@$(PY) -m compileall -q $(SOURCES)

run: bytecode ## start web, workers, beat and Flower (embedded servers if no URLs are set)
	$(PY) -m devtools.launcher $(ARGS)

# pytest-xdist. The suite mostly waits for real minute boundaries, not for the CPU, so it runs
# more workers than a 2-core machine has cores. `--dist loadgroup` hands out one test at a time
# in collection order (longest first, tests/conftest.py) and keeps each `xdist_group` on one
# worker. Each worker needs a Redis database of its own, counted up from REDIS_URL's.
# TEST_WORKERS=0 runs in this process (for pdb).
TEST_WORKERS ?= 6
FAST_WORKERS ?= 4
# No test left out here starts a process; a test that starts one unmarked fails. --reuse-db
# keeps the workers' test databases between runs (new migrations are still applied); add
# --create-db to PYTEST_ARGS after going back to a branch with fewer migrations.
FAST_MARKERS := not integration and not chaos and not browser and not slow and not process

test: bytecode ## run the test suite in parallel (embedded servers if no URLs are set)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test-fast: bytecode ## the tests that start no process, for the edit loop
	$(PY) -m pytest -n $(FAST_WORKERS) --dist loadgroup --reuse-db -m "$(FAST_MARKERS)" $(PYTEST_ARGS)

# Both record what they measured (date, commit, machine) under docs/data/ and render their page
# (docs/reliability.md, docs/benchmarks.md) from it: commit the data with the page.
CHAOS_REPORT ?= var/chaos/report.jsonl
chaos: bytecode ## fault-injection suite with real processes; records it, renders docs/reliability.md
	@rm -f $(CHAOS_REPORT)
	$(PY) -m devtools.gendocs chaos-start
	CHAOS_REPORT=$(CHAOS_REPORT) $(PY) -m pytest -m chaos -p no:cacheprovider tests/chaos $(PYTEST_ARGS); \
	status=$$?; $(PY) -m tests.chaos.report $(CHAOS_REPORT); \
	$(PY) -m devtools.gendocs chaos $(CHAOS_REPORT) $$status make chaos$(if $(PYTEST_ARGS), PYTEST_ARGS='$(PYTEST_ARGS)'); \
	exit $$status

bench: bytecode ## benchmarks side by side; records them, renders docs/benchmarks.md
	$(PY) -m bench $(ARGS)

lint: install ## ruff lint and format check, migrations check
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: install ## apply ruff's formatting and safe fixes
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

clean: ## remove the virtual environment and var/ (embedded data included)
	rm -rf .venv .venv-uv var
