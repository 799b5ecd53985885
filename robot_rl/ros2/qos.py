"""QoS profiles of robot_rl's ROS 2 topics: sensor streams drop, commands keep only the newest.

Best-effort readers match both best-effort and reliable writers, so a teleop driver that
publishes with the default (reliable) profile still reaches `~/cmd_twist`. Services keep rclpy's
default (reliable) profile.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

SENSOR_DEPTH = 5
"""Queue of a sensor stream: a slow reader loses old samples, the writer never waits (ROS 2's
`qos_profile_sensor_data` depth)."""


def sensor_qos(depth: int = SENSOR_DEPTH) -> QoSProfile:
    """Best effort, keep last `depth`, volatile: joint states, poses, wrenches, images."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def command_qos() -> QoSProfile:
    """Best effort, keep last 1: only the newest teleop twist matters; an older one is stale."""
    return sensor_qos(depth=1)


def diagnostics_qos() -> QoSProfile:
    """Reliable, keep last 10: what `diagnostic_aggregator` and rqt_robot_monitor expect."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
