#!/usr/bin/env bash
# Idempotent environment set-up for ROLL, called by the README commands (quickstart and tests).
#
#   bash launch/setup_env.sh            # creates .venv (if missing) and installs roll-rl[test]
#
# On a machine without a GPU it pins torch==2.13.0 (constraints-cpu.txt): without that pin pip
# resolves a multi-GB CUDA torch. transformer-engine and sglang are never installed here.
# A stamp of the inputs (setup.py, constraints, csrc/) makes a second run a no-op.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${ROLL_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment at $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"

CONSTRAINTS=()
if ! command -v nvidia-smi >/dev/null 2>&1; then
  CONSTRAINTS=(-c "$ROOT/constraints-cpu.txt")
fi

STAMP="$VENV/.roll_setup_stamp"
HASH="$({ cat setup.py pyproject.toml constraints-cpu.txt; find csrc -type f -print0 | sort -z | xargs -0 cat; } 2>/dev/null | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] && "$VPY" -c "import roll" 2>/dev/null; then
  echo "[setup] environment up to date ($VENV)"
  exit 0
fi

echo "[setup] installing roll-rl[test] into $VENV (CPU constraints: ${#CONSTRAINTS[@]} file(s))"
"$VPY" -m pip install -q --disable-pip-version-check "${CONSTRAINTS[@]}" "setuptools>=68" wheel "pybind11>=2.12"
if [ ${#CONSTRAINTS[@]} -gt 0 ]; then
  "$VPY" -m pip install -q --disable-pip-version-check "${CONSTRAINTS[@]}" torch==2.13.0
fi
"$VPY" -m pip install -q --disable-pip-version-check "${CONSTRAINTS[@]}" --no-build-isolation -e ".[test]"
echo "$HASH" > "$STAMP"
echo "[setup] done"
