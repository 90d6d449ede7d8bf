# The two commands a newcomer needs: `make run` and `make test`. Both install what is missing first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

install: $(STAMP)

# Reinstalls when pyproject.toml changes; otherwise a no-op, so every target can depend on it.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/gateway dev

# kcat and jq (Debian's packages) run the kcat lines of docs/consumers.md: installed here if
# missing; where they cannot be (no root, no apt), those tests are skipped, the rest run.
test: install
	@command -v kcat >/dev/null && command -v jq >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq kcat jq) >/dev/null 2>&1 || \
		echo "kcat and jq could not be installed: the kcat lines of docs/consumers.md are not tested"
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# wrk (Debian's package) is the load generator: installed here if missing.
bench: install
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench.validators
	$(BIN)/python -m bench.stages
	$(BIN)/python -m bench.run --soak 300 --write

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
