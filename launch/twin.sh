#!/usr/bin/env bash
# Start a twin robot server paced like a real robot, then a client that records scripted demos
# through it. Both stop when this script stops (Ctrl-C).
#   launch/twin.sh [TASK] [EPISODES]
set -euo pipefail
TASK="${1:-pick_cube}"
EPISODES="${2:-3}"
PORT="${ROBOT_RL_PORT:-5555}"
OUT="${ROBOT_RL_OUT:-runs/${TASK}_demos}"
export MUJOCO_GL="${MUJOCO_GL:-egl}"

robot-rl serve --task "$TASK" --pace realtime --bind "tcp://127.0.0.1:${PORT}" &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null' EXIT

# The client's hello waits for the server to come up (connect timeout 5 s, retried here).
for _ in $(seq 30); do
  if python -c "from robot_rl.bridge.client import BridgeClient as C; C('tcp://127.0.0.1:${PORT}', role='monitor').close()" 2>/dev/null; then
    break
  fi
  sleep 1
done

robot-rl record --task "$TASK" --teleop scripted --episodes "$EPISODES" --out "$OUT" \
  --server "tcp://127.0.0.1:${PORT}"
echo "demos in $OUT"
