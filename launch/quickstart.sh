#!/usr/bin/env bash
# The quickstart (README's first command): set up .venv (idempotent), then run SFT -> GRPO on a
# tiny model on CPU through local Ray (127.0.0.1) and Megatron-Core. Last line of output:
#   held-out accuracy: <before> -> <after>
# Usage: bash launch/quickstart.sh [--out DIR] [--seed N] [--sft-steps N] [--rl-steps N]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash launch/setup_env.sh
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
exec "${ROLL_VENV:-$ROOT/.venv}/bin/python" launch/quickstart.py "$@"
