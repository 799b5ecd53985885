"""ROS 2 on the robot PC: the robot server as a ROS 2 node, ROS 2 arms and cameras as backends,
and recorded episodes as ROS 2-typed MCAP.

Only rclpy's public API is used, so a lab's distro ROS 2 (source its setup.bash) and the unofficial
PyPI wheels (`pip install 'robot_rl[ros-ci]'`, what CI runs) both work. Like every robot-PC
package, nothing here imports torch.
"""

from __future__ import annotations

from robot_rl.errors import DependencyMissing


def require_rclpy():
    """rclpy, or a DependencyMissing that says how to get it."""
    try:
        import rclpy
    except ImportError as exc:
        raise DependencyMissing(
            f"ROS 2's rclpy is not importable ({exc}): source your ROS 2 distro "
            "(`source /opt/ros/<distro>/setup.bash`) before starting robot-rl, or install the unofficial "
            "PyPI wheels with `pip install 'robot_rl[ros-ci]'`") from exc
    return rclpy
