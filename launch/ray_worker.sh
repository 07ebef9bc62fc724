#!/usr/bin/env bash
# Join this node to a running ROLL Ray cluster as a worker (start the head first with
# launch/ray_head.sh). Waits until the head answers, then starts Ray here:
#
#   bash launch/ray_worker.sh HEAD_ADDR          # HEAD_ADDR = host or host:port (port 6379 if omitted)
#   bash launch/ray_worker.sh 10.0.0.1:6379
#
# Knobs (env, all optional):
#   ROLL_HEAD_WAIT_S         seconds to wait for the head to answer (default 120)
#   ROLL_NODE_IP, ROLL_NUM_GPUS, ROLL_NUM_CPUS, ROLL_OBJECT_STORE_BYTES, ROLL_RAY_BLOCK, ROLL_RAY_ARGS
#                            as described in launch/common.sh (GPUs are autodetected).
#   RAY_AUTH_TOKEN           the head's token (`ray get-auth-token` there), unless ~/.ray/auth_token
#                            is shared with the head (RAY_AUTH_MODE=disabled if the head runs without)
# Every node should have the same number of GPUs: device_mapping assumes it (launch/README.md).
# Stop it with `ray stop` on this node.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=launch/common.sh
source "$ROOT/launch/common.sh"

if [ $# -ne 1 ] || [[ "$1" == -* ]]; then
  roll_usage "${BASH_SOURCE[0]}"
  exit 2
fi
HEAD="$1"
[[ "$HEAD" == *:* ]] || HEAD="$HEAD:6379"

RAY="$(roll_ray)"
roll_require_token
WAIT_S="${ROLL_HEAD_WAIT_S:-120}"
echo "[ray_worker] waiting up to ${WAIT_S}s for the Ray head at $HEAD"
deadline=$((SECONDS + WAIT_S))
until "$RAY" status --address "$HEAD" >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    roll_die "no Ray head answered at $HEAD within ${WAIT_S}s; start it with launch/ray_head.sh, check the address and port, or raise ROLL_HEAD_WAIT_S"
  fi
  sleep 3
done

roll_ray_start_args
START=("$RAY" start --address="$HEAD" "${ROLL_RAY_START_ARGS[@]}")
echo "[ray_worker] ${START[*]}"
if [ "${ROLL_RAY_BLOCK:-0}" = 1 ]; then
  exec "${START[@]}"
fi
"${START[@]}"
echo "[ray_worker] joined $HEAD with $(roll_num_gpus) GPU(s); check with: $RAY status --address $HEAD"
