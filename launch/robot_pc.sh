#!/usr/bin/env bash
# Template for a physical robot PC: serve the arm and its cameras to learners on the lab network.
# Copy it, fill in the backend, task, camera config and keys, and run it (or install
# hardware/systemd/robot-rl-serve.service). Learners connect with
#   gymnasium.make("robot_rl/PickCube-v0", server="tcp://ROBOT_PC_IP:5555", keys_dir="keys")
set -euo pipefail
BACKEND="${BACKEND:-twin}"          # franka | ur | twin | franka-double | ur-double (hardware/README.md)
ROBOT_IP="${ROBOT_IP:-}"            # the arm's address: franka 172.16.0.2 (FCI), ur e.g. 192.168.1.10
UR_MODE="${UR_MODE:-torque}"        # ur only: torque (directTorque, 500 Hz) | servo (admittance over servoL)
FRANKA_REALTIME="${FRANKA_REALTIME:-enforce}"  # franka only: enforce (needs PREEMPT_RT) | ignore
TASK="${TASK:-pick_cube}"           # tasks/<name>.yaml: workspace box, limits, gains, cameras
CAMERAS="${CAMERAS:-}"              # e.g. hardware/cameras/my_lab.yaml (empty: the twin's cameras)
KEYS="${KEYS:-keys}"                # robot-rl keys --out keys; copy client keys to the learner
BIND="${BIND:-tcp://0.0.0.0:5555}"

[ -f "$KEYS/server.key_secret" ] || robot-rl keys --out "$KEYS"
args=(serve --backend "$BACKEND" --task "$TASK" --pace realtime --bind "$BIND" --keys-dir "$KEYS")
[ -n "$CAMERAS" ] && args+=(--cameras "$CAMERAS")
case "$BACKEND" in
  franka|ur)
    [ -n "$ROBOT_IP" ] || { echo "robot_pc.sh: set ROBOT_IP to the arm's address for BACKEND=$BACKEND" >&2; exit 2; }
    args+=(--robot-ip "$ROBOT_IP");;
esac
case "$BACKEND" in ur|ur-double) args+=(--ur-mode "$UR_MODE");; esac
case "$BACKEND" in franka|franka-double) args+=(--franka-realtime "$FRANKA_REALTIME");; esac
exec robot-rl "${args[@]}"
