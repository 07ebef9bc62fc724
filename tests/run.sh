#!/usr/bin/env bash
# Set up the environment (idempotent) and run lint + the default test suite (CPU, no slow/gpu).
#
#   bash tests/run.sh                 # what CI runs (.ci/run)
#   bash tests/run.sh tests/unit -x   # extra arguments go to pytest
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash launch/setup_env.sh
VENV="${ROLL_VENV:-$ROOT/.venv}"
export PATH="$VENV/bin:$PATH"
# Ray binds to loopback only in tests and the quickstart.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
LINT_PATHS=(roll workers tests launch bench setup.py)
echo "[lint] ruff check + ruff format --check"
ruff check "${LINT_PATHS[@]}"
ruff format --check "${LINT_PATHS[@]}"
echo "[types] mypy roll workers"
mypy roll workers
echo "[test] pytest"
python -m pytest -q "$@"
