"""Small rclpy processes that talk to `robot-rl ros2-bridge` from outside: for tests and `bench ros2`.

    python -m robot_rl.ros2.probe record --namespace robot_rl --cameras wrist,front --seconds 5
    python -m robot_rl.ros2.probe twist --namespace robot_rl --twist 0.05 0 0 0 0 0 --rate-hz 50
    python -m robot_rl.ros2.probe string --namespace robot_rl --seconds 2     # wrong type on cmd_twist

`record` prints one JSON object when it ends (after --seconds, or on SIGINT/SIGTERM): per topic the
list of `[header stamp ns, receive time ns]` (receive time: this process's time.monotonic_ns, the
bridge's clock when both run on one machine), plus the last TCP pose, joint count, image size and
the diagnostic modes seen. It prints "ready" to stderr once every topic has delivered a message.
`twist` publishes TwistStamped at --rate-hz until killed (a teleop device); `--nan` makes every
twist NaN. Domain and discovery come from the environment (ROS_DOMAIN_ID and friends).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import time

import numpy as np

from robot_rl.ros2 import require_rclpy


def _spin_until(executor, stop: threading.Event, seconds: float | None) -> None:
    deadline = None if seconds is None else time.monotonic() + seconds
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        executor.spin_once(timeout_sec=0.05)


def record(args: argparse.Namespace, node, executor, stop: threading.Event) -> dict:
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped, WrenchStamped
    from sensor_msgs.msg import Image, JointState

    from robot_rl.ros2.messages import ns_of_stamp
    from robot_rl.ros2.qos import diagnostics_qos, sensor_qos

    base = f"/{args.namespace}/bridge"
    out: dict = {"topics": {}, "modes": [], "diagnostics": [], "pose": None, "n_joints": None, "image_hw": {}}
    qos = sensor_qos(depth=args.depth)

    def keep(topic: str, extra=None):
        stamps = out["topics"].setdefault(topic, [])

        def cb(msg) -> None:
            stamps.append([ns_of_stamp(msg.header.stamp), time.monotonic_ns()])
            if extra is not None:
                extra(msg)
        return cb

    def on_pose(msg) -> None:
        p, o = msg.pose.position, msg.pose.orientation
        out["pose"] = [p.x, p.y, p.z, o.w, o.x, o.y, o.z]

    def on_joints(msg) -> None:
        out["n_joints"] = len(msg.position)

    def on_diag(msg) -> None:
        for s in msg.status:
            if s.name == f"{args.namespace}/bridge":
                values = {kv.key: kv.value for kv in s.values}
                out["modes"].append(values.get("mode", ""))
                out["diagnostics"].append(values)

    node.create_subscription(JointState, f"{base}/joint_states", keep("joint_states", on_joints), qos)
    node.create_subscription(PoseStamped, f"{base}/tcp_pose", keep("tcp_pose", on_pose), qos)
    node.create_subscription(WrenchStamped, f"{base}/wrench", keep("wrench"), qos)
    cameras = [c for c in args.cameras.split(",") if c]
    for cam in cameras:
        def on_image(msg, cam=cam) -> None:
            out["image_hw"][cam] = [msg.height, msg.width]
        node.create_subscription(Image, f"{base}/{cam}/image_raw", keep(f"{cam}/image_raw", on_image), qos)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, diagnostics_qos())
    want = {"joint_states", "tcp_pose", "wrench", *(f"{c}/image_raw" for c in cameras)}
    t0 = time.monotonic()
    while not stop.is_set() and not want <= {k for k, v in out["topics"].items() if v}:
        executor.spin_once(timeout_sec=0.05)
        if time.monotonic() - t0 > args.ready_timeout_s:
            break
    print("ready", file=sys.stderr, flush=True)
    _spin_until(executor, stop, args.seconds)
    return out


def publish_twists(args: argparse.Namespace, node, executor, stop: threading.Event) -> dict:
    from geometry_msgs.msg import TwistStamped

    from robot_rl.ros2.messages import twist_stamped

    pub = node.create_publisher(TwistStamped, f"/{args.namespace}/bridge/cmd_twist", 1)
    twist = np.full(6, math.nan) if args.nan else np.asarray(args.twist, dtype=np.float64)
    period_s, sent = 1.0 / args.rate_hz, 0
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    next_t = time.monotonic()
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        pub.publish(twist_stamped(time.monotonic_ns(), args.frame_id, twist))
        sent += 1
        next_t += period_s
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.1:
            next_t = time.monotonic()
    return {"sent": sent}


def publish_strings(args: argparse.Namespace, node, executor, stop: threading.Event) -> dict:
    """std_msgs/String on the twist topic: DDS refuses to match a reader and a writer whose types
    differ, so nothing reaches the bridge (ROS 2 logs an incompatible-type notice at most)."""
    from std_msgs.msg import String

    pub = node.create_publisher(String, f"/{args.namespace}/bridge/cmd_twist", 10)
    sent = 0
    deadline = time.monotonic() + (args.seconds or 1.0)
    while not stop.is_set() and time.monotonic() < deadline:
        pub.publish(String(data="not a twist"))
        sent += 1
        time.sleep(0.01)
    return {"sent": sent}


MODES = {"record": record, "twist": publish_twists, "string": publish_strings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robot_rl.ros2.probe")
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("--namespace", default="robot_rl")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--cameras", default="")
    parser.add_argument("--depth", type=int, default=50, help="record: subscription queue depth")
    parser.add_argument("--ready-timeout-s", type=float, default=30.0)
    parser.add_argument("--twist", type=float, nargs=6, default=[0.0] * 6, help="m/s and rad/s, base frame")
    parser.add_argument("--nan", action="store_true")
    parser.add_argument("--rate-hz", type=float, default=50.0)
    parser.add_argument("--frame-id", default="base")
    args = parser.parse_args(argv)
    rclpy = require_rclpy()
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ctx = Context()
    rclpy.init(context=ctx, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(f"probe_{args.mode}", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    try:
        result = MODES[args.mode](args, node, executor, stop)
    finally:
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        ctx.try_shutdown()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
