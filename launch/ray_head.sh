#!/usr/bin/env bash
# Start the Ray head of a multi-node ROLL cluster on this node and print how to add workers and
# submit a job. Run it once, on the node that will also run the driver:
#
#   bash launch/ray_head.sh
#   ROLL_NUM_GPUS=4 ROLL_OBJECT_STORE_BYTES=$((64 << 30)) bash launch/ray_head.sh
#
# Knobs (env, all optional):
#   ROLL_RAY_PORT            GCS port workers join on (default 6379)
#   ROLL_DASHBOARD_PORT      dashboard / job-submission port (default 8265)
#   ROLL_DASHBOARD_HOST      interface the dashboard binds to (default 127.0.0.1: whoever reaches it
#                            can run code on the cluster; use 0.0.0.0 only on a trusted network)
#   ROLL_CLIENT_PORT         Ray client server port (default 10001)
#   ROLL_NODE_IP, ROLL_NUM_GPUS, ROLL_NUM_CPUS, ROLL_OBJECT_STORE_BYTES, ROLL_RAY_BLOCK, ROLL_RAY_ARGS
#                            as described in launch/common.sh (GPUs are autodetected).
#   RAY_AUTH_MODE            token (default: workers and clients need this head's token) | disabled
# Stop it with `ray stop` on this node (that stops every Ray process of your user here).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=launch/common.sh
source "$ROOT/launch/common.sh"

if [ $# -gt 0 ]; then
  roll_usage "${BASH_SOURCE[0]}"
  exit 2
fi

RAY="$(roll_ray)"
PORT="${ROLL_RAY_PORT:-6379}"
DASHBOARD_PORT="${ROLL_DASHBOARD_PORT:-8265}"
DASHBOARD_HOST="${ROLL_DASHBOARD_HOST:-127.0.0.1}"
NODE_IP="$(roll_node_ip)"
roll_ray_start_args
# Creates ~/.ray/auth_token unless a token exists (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or that file).
if [ "$RAY_AUTH_MODE" = token ]; then
  "$RAY" get-auth-token --generate >/dev/null
fi
START=("$RAY" start --head --port="$PORT" --include-dashboard=true --dashboard-host="$DASHBOARD_HOST"
  --dashboard-port="$DASHBOARD_PORT" --ray-client-server-port="${ROLL_CLIENT_PORT:-10001}"
  "${ROLL_RAY_START_ARGS[@]}")

next_steps() {
  cat <<NEXT
[ray_head] Ray head at $NODE_IP:$PORT ($(roll_num_gpus) GPU(s) here), dashboard at $DASHBOARD_HOST:$DASHBOARD_PORT
[ray_head] next:
  on every other node:    bash launch/ray_worker.sh $NODE_IP:$PORT
                          (with the same ~/.ray/auth_token, or RAY_AUTH_TOKEN=\$($RAY get-auth-token) from here)
  check the nodes:        $RAY status --address $NODE_IP:$PORT
  submit a job from here: RAY_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT bash launch/submit.sh CONFIG [key=value ...]
  or run the driver here: $(roll_python) -m roll train CONFIG ray_address=$NODE_IP:$PORT
  device_mapping id d runs on node d // gpus_per_node (launch/README.md)
NEXT
}

echo "[ray_head] ${START[*]}"
if [ "${ROLL_RAY_BLOCK:-0}" = 1 ]; then
  next_steps
  exec "${START[@]}"
fi
"${START[@]}"
next_steps
