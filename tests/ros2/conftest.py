"""ROS 2 tests: rclpy nodes on loopback only, in a DDS domain of their own.

The variables are set when this file is imported (collection), before any rclpy.init in this
process, and child processes inherit them. Without rclpy these tests skip, unless
ROBOT_RL_REQUIRE_ROS=1 (CI), where a missing rclpy is a failure.
"""

from __future__ import annotations

import os
import random

import pytest

os.environ["ROS_DOMAIN_ID"] = str(random.Random().randint(1, 101))
os.environ["ROS_LOCALHOST_ONLY"] = "1"
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

if os.environ.get("ROBOT_RL_REQUIRE_ROS") != "1":
    pytest.importorskip("rclpy", reason="ROS 2 (rclpy) not installed: pip install 'robot_rl[ros-ci]'")
