# jobsite: `make run` starts the platform, `make test` proves it. Both work on a bare machine:
# they install the locked dependencies with uv (bootstrapped if missing) and start embedded
# PostgreSQL and Redis when DATABASE_URL / REDIS_URL are unset.

SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo .venv-uv/bin/uv)
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: run test bench chaos lint format install clean help

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

.venv-uv/bin/uv:
	python3 -m venv .venv-uv && .venv-uv/bin/pip install --quiet 'uv>=0.5'

.venv/.synced: pyproject.toml uv.lock | $(if $(findstring .venv-uv,$(UV)),.venv-uv/bin/uv)
	$(UV) sync --frozen --quiet
	@touch $@

install: .venv/.synced ## create .venv with the locked dependencies

run: install ## start web, workers, beat and Flower (embedded servers if no URLs are set)
	$(PY) -m devtools.launcher $(ARGS)

test: install ## run the test suite (embedded servers if no URLs are set)
	$(PY) -m pytest $(PYTEST_ARGS)

# Both record what they measured (date, commit, machine) under docs/data/ and render their page
# (docs/reliability.md, docs/benchmarks.md) from it: commit the data with the page.
CHAOS_REPORT ?= var/chaos/report.jsonl
chaos: install ## fault-injection suite with real processes; records it, renders docs/reliability.md
	@rm -f $(CHAOS_REPORT)
	$(PY) -m devtools.gendocs chaos-start
	CHAOS_REPORT=$(CHAOS_REPORT) $(PY) -m pytest -m chaos -p no:cacheprovider tests/chaos $(PYTEST_ARGS); \
	status=$$?; $(PY) -m tests.chaos.report $(CHAOS_REPORT); \
	$(PY) -m devtools.gendocs chaos $(CHAOS_REPORT) $$status make chaos$(if $(PYTEST_ARGS), PYTEST_ARGS='$(PYTEST_ARGS)'); \
	exit $$status

bench: install ## benchmarks side by side; records them, renders docs/benchmarks.md
	$(PY) -m bench $(ARGS)

lint: install ## ruff lint and format check, migrations check
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: install ## apply ruff's formatting and safe fixes
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

clean: ## remove the virtual environment and var/ (embedded data included)
	rm -rf .venv .venv-uv var
