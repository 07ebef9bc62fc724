#!/usr/bin/env bash
# Helpers shared by the launch scripts; sourced, not run:
#
#   source "$ROOT/launch/common.sh"     # after setting ROOT to the repository root
#
# Knobs read here (all optional):
#   ROLL_VENV                virtual environment to use (default: $ROOT/.venv, else python3/ray on PATH)
#   ROLL_NODE_IP             IP this node advertises to Ray (default: first address of `hostname -I`)
#   ROLL_NUM_GPUS            GPUs Ray may use here (default: CUDA_VISIBLE_DEVICES count, else nvidia-smi)
#   ROLL_NUM_CPUS            CPUs Ray may use here (default: Ray detects them)
#   ROLL_OBJECT_STORE_BYTES  object store size in bytes (default: Ray's, 30% of RAM)
#   ROLL_RAY_BLOCK=1         keep `ray start` in the foreground until Ray stops (used by slurm.sbatch)
#   ROLL_RAY_ARGS            extra `ray start` flags, split on spaces (e.g. "--temp-dir=/scratch/ray")
# Ray token authentication is on (RAY_AUTH_MODE=token): every node and client needs the head's token,
# from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token. RAY_AUTH_MODE=disabled opts out.
set -euo pipefail
# Ray starts clusters with token auth by default but its clients only send the token in token mode.
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"

roll_die() {
  echo "error: $*" >&2
  exit 2
}

# Prints the opening comment block of script $1 (its usage) to stderr.
roll_usage() {
  awk 'NR == 1 { next } /^#( |$)/ { sub(/^# ?/, ""); print; next } { exit }' "$1" >&2
}

roll_python() {
  local venv="${ROLL_VENV:-$ROOT/.venv}"
  if [ -x "$venv/bin/python" ]; then
    echo "$venv/bin/python"
  elif command -v python3 >/dev/null 2>&1; then
    command -v python3
  else
    roll_die "no Python found: run 'bash launch/setup_env.sh' or set ROLL_VENV"
  fi
}

roll_ray() {
  local venv="${ROLL_VENV:-$ROOT/.venv}"
  if [ -x "$venv/bin/ray" ]; then
    echo "$venv/bin/ray"
  elif command -v ray >/dev/null 2>&1; then
    command -v ray
  else
    roll_die "the 'ray' command is missing: run 'bash launch/setup_env.sh' or set ROLL_VENV"
  fi
}

roll_num_gpus() {
  if [ -n "${ROLL_NUM_GPUS:-}" ]; then
    echo "$ROLL_NUM_GPUS"
  elif [ -n "${CUDA_VISIBLE_DEVICES+x}" ]; then
    # Count what the scheduler (e.g. Slurm) made visible, not what the machine has.
    local devices
    IFS=',' read -ra devices <<<"$CUDA_VISIBLE_DEVICES"
    echo "${#devices[@]}"
  elif command -v nvidia-smi >/dev/null 2>&1; then
    { nvidia-smi -L 2>/dev/null || true; } | grep -c '^GPU' || true
  else
    echo 0
  fi
}

roll_node_ip() {
  if [ -n "${ROLL_NODE_IP:-}" ]; then
    echo "$ROLL_NODE_IP"
    return
  fi
  local ips
  read -ra ips <<<"$(hostname -I 2>/dev/null || true)"
  [ "${#ips[@]}" -gt 0 ] || roll_die "cannot find this node's IP with 'hostname -I'; set ROLL_NODE_IP"
  echo "${ips[0]}"
}

# Fails unless a Ray auth token is available to this node (token mode only).
roll_require_token() {
  if [ "$RAY_AUTH_MODE" = token ] && [ -z "${RAY_AUTH_TOKEN:-}" ] \
    && [ ! -s "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]; then
    roll_die "no Ray auth token on this node; on the head run 'ray get-auth-token' and export RAY_AUTH_TOKEN=<token> here (or share ~/.ray/auth_token)"
  fi
}

# Fills the array ROLL_RAY_START_ARGS with the `ray start` flags both node kinds share.
roll_ray_start_args() {
  local extra ray_bin
  ray_bin="$(dirname "$(roll_ray)")"
  # Ray job entrypoints run `python` from the PATH Ray starts with: put this environment first.
  export PATH="$ray_bin:$PATH"
  ROLL_RAY_START_ARGS=(--node-ip-address="$(roll_node_ip)" --num-gpus="$(roll_num_gpus)" --disable-usage-stats)
  if [ -n "${ROLL_NUM_CPUS:-}" ]; then
    ROLL_RAY_START_ARGS+=(--num-cpus="$ROLL_NUM_CPUS")
  fi
  if [ -n "${ROLL_OBJECT_STORE_BYTES:-}" ]; then
    ROLL_RAY_START_ARGS+=(--object-store-memory="$ROLL_OBJECT_STORE_BYTES")
  fi
  if [ "${ROLL_RAY_BLOCK:-0}" = 1 ]; then
    ROLL_RAY_START_ARGS+=(--block)
  fi
  read -ra extra <<<"${ROLL_RAY_ARGS:-}"
  ROLL_RAY_START_ARGS+=("${extra[@]}")
}
