# Common commands for ROLL development; `make` alone lists them.
#
#   make setup | test | lint | format | quickstart | quickstart-agentic | bench | clean
#   make test ARGS="tests/unit -x"     # extra pytest arguments

VENV ?= $(or $(ROLL_VENV),.venv)
PYTHON := $(VENV)/bin/python
RUFF := $(VENV)/bin/ruff
LINT_PATHS := roll workers tests launch bench setup.py
BENCHES := $(sort $(wildcard bench/bench_*.py))

.PHONY: help setup test lint format quickstart quickstart-agentic bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

setup:  ## create .venv and install ROLL (idempotent)
	bash launch/setup_env.sh

test:  ## lint + the default test suite (CPU; slow and gpu tests skipped)
	bash tests/run.sh $(ARGS)

lint:  ## ruff check, ruff format --check and mypy on roll/ and workers/
	$(RUFF) check $(LINT_PATHS)
	$(RUFF) format --check $(LINT_PATHS)
	$(VENV)/bin/mypy roll workers

format:  ## apply ruff format and the safe ruff fixes
	$(RUFF) format $(LINT_PATHS)
	$(RUFF) check --fix $(LINT_PATHS)

quickstart:  ## the CPU quickstart end to end
	bash launch/quickstart.sh

quickstart-agentic:  ## the CPU agentic quickstart (multi-turn GRPO on guess-the-number)
	bash launch/quickstart_agentic.sh

bench:  ## run every bench/bench_*.py in turn (stops at the first failure)
	@set -e; for bench in $(BENCHES); do echo "== $$bench"; $(PYTHON) $$bench; done

# Keeps .venv and outputs/ (results); dropping the stamp makes `make setup` rebuild the extension.
clean:  ## remove build artefacts and caches
	rm -rf build *.egg-info .pytest_cache .ruff_cache .hypothesis roll/_C*.so $(VENV)/.roll_setup_stamp
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
