#!/usr/bin/env bash
# Run a ROLL job on this machine only: set up the environment, then `roll train CONFIG`. The job
# starts its own Ray on 127.0.0.1 and stops it at the end; nothing else is started or left running.
#
#   bash launch/single_node.sh CONFIG [key=value ...]
#   bash launch/single_node.sh configs/quickstart/rlvr_grpo.yaml max_steps=2 output_dir=./outputs/try
#
# Knobs (env, all optional):
#   ROLL_SKIP_SETUP=1   skip launch/setup_env.sh (e.g. a read-only shared environment)
#   ROLL_VENV           virtual environment to use (default .venv)
#   ROLL_LOG_LEVEL      DEBUG | INFO | WARNING (default INFO)
#   ROLL_PROGRESS       0 hides the progress bars, 1 forces them (default: on a terminal only)
# RAY_ADDRESS is ignored here (the job stays local); use launch/submit.sh for a cluster.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=launch/common.sh
source "$ROOT/launch/common.sh"

if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  roll_usage "${BASH_SOURCE[0]}"
  exit 2
fi
CONFIG="$1"
shift
[ -f "$CONFIG" ] || roll_die "config file '$CONFIG' not found; pass a YAML path such as configs/quickstart/rlvr_grpo.yaml"

if [ "${ROLL_SKIP_SETUP:-0}" != 1 ]; then
  bash "$ROOT/launch/setup_env.sh"
fi
if [ -n "${RAY_ADDRESS:-}" ]; then
  echo "[single_node] ignoring RAY_ADDRESS=$RAY_ADDRESS: this script runs locally (launch/submit.sh targets a cluster)" >&2
  unset RAY_ADDRESS
fi
# The local Ray listens on loopback only.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
# ray_address=null comes first so a ray_address given on the command line still wins.
exec "$(roll_python)" -m roll train "$CONFIG" ray_address=null "$@"
