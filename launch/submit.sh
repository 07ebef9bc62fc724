#!/usr/bin/env bash
# Submit a ROLL job to a running Ray cluster with `ray job submit`: the repository (without .venv,
# outputs, build, .git) is uploaded as the job's working_dir and the head runs
# `python -m roll train CONFIG [key=value ...]` with the Python that started Ray there.
#
#   RAY_ADDRESS=http://127.0.0.1:8265 bash launch/submit.sh CONFIG [key=value ...]
#   RAY_ADDRESS=http://127.0.0.1:8265 bash launch/submit.sh configs/cluster/qwen2.5-7b_grpo_8gpu.yaml max_steps=50
#
# RAY_ADDRESS is the head's dashboard address (launch/ray_head.sh prints it; tunnel it with
# `ssh -L 8265:127.0.0.1:8265 HEAD` to submit from elsewhere). The config is checked here first
# (`roll train --validate`), so a bad key fails before anything is uploaded. Relative paths in the
# config (output_dir, data files) resolve inside the uploaded copy on the head: use absolute paths
# on a shared filesystem for outputs you want to keep.
# Knobs (env, all optional):
#   ROLL_SUBMISSION_ID     job id to use (default: Ray picks one)
#   ROLL_NO_WAIT=1         return after submitting instead of following the logs
# The head's Ray auth token must be here too (RAY_AUTH_TOKEN or ~/.ray/auth_token; launch/README.md).
# Every ROLL_* and NCCL_* variable set here is forwarded to the job (e.g. ROLL_LOG_LEVEL, NCCL_DEBUG).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=launch/common.sh
source "$ROOT/launch/common.sh"

if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  roll_usage "${BASH_SOURCE[0]}"
  exit 2
fi
[ -n "${RAY_ADDRESS:-}" ] || roll_die "RAY_ADDRESS is not set; export the head's dashboard address, e.g. RAY_ADDRESS=http://127.0.0.1:8265"
CONFIG="$1"
shift
[ -f "$CONFIG" ] || roll_die "config file '$CONFIG' not found; pass a YAML path such as configs/cluster/qwen2.5-7b_grpo_8gpu.yaml"
CONFIG_ABS="$(cd "$(dirname "$CONFIG")" && pwd)/$(basename "$CONFIG")"
case "$CONFIG_ABS" in
  "$ROOT"/*) JOB_CONFIG="${CONFIG_ABS#"$ROOT"/}" ;; # shipped with the working_dir
  *)
    JOB_CONFIG="$CONFIG_ABS"
    echo "[submit] $CONFIG_ABS is outside the repository: it must exist at that path on the head node" >&2
    ;;
esac

roll_require_token
PY="$(roll_python)"
"$PY" -m roll train "$CONFIG" "$@" --validate >/dev/null

RUNTIME_ENV="$("$PY" - "$ROOT" <<'PYEOF'
import json
import os
import sys

LOCAL = {"ROLL_VENV", "ROLL_SUBMISSION_ID", "ROLL_NO_WAIT"}  # knobs of this machine and this script
forwarded = {k: v for k, v in os.environ.items() if k.startswith(("ROLL_", "NCCL_")) and k not in LOCAL}
print(json.dumps({
    "working_dir": sys.argv[1],
    "excludes": [".venv/", "outputs/", "build/", ".git/", "**/__pycache__/", "*.egg-info/"],
    "env_vars": forwarded,
}))
PYEOF
)"

SUBMIT=("$(roll_ray)" job submit --address "$RAY_ADDRESS" --runtime-env-json "$RUNTIME_ENV")
if [ -n "${ROLL_SUBMISSION_ID:-}" ]; then
  SUBMIT+=(--submission-id "$ROLL_SUBMISSION_ID")
fi
if [ "${ROLL_NO_WAIT:-0}" = 1 ]; then
  SUBMIT+=(--no-wait)
fi
echo "[submit] to $RAY_ADDRESS: python -m roll train $JOB_CONFIG $*"
exec "${SUBMIT[@]}" -- python -m roll train "$JOB_CONFIG" "$@"
