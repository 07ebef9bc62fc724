#!/usr/bin/env bash
# The agentic quickstart: set up .venv (idempotent), then SFT -> multi-turn GRPO on guess-the-number
# with a tiny model on CPU through local Ray (127.0.0.1). Last line of output:
#   held-out success rate: <before> -> <after>
# Usage: bash launch/quickstart_agentic.sh [--out DIR] [--seed N] [--sft-steps N] [--rl-steps N]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash launch/setup_env.sh
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
exec "${ROLL_VENV:-$ROOT/.venv}/bin/python" launch/quickstart_agentic.py "$@"
