"""One rclpy node in its own Context, spun by a SingleThreadedExecutor on a daemon thread.

    link = NodeThread("robot_rl_arm")          # rclpy.init on a private context
    link.node.create_subscription(...)         # before or after start()
    link.start()
    ...
    link.close()                               # stop the executor, join its thread, shut down

Threads: subscription callbacks run on the spin thread; they should only store the newest value
(one assignment). Any thread may publish (rclpy's publish is thread-safe). `close()` must be
called before the process exits: an executor thread still spinning at interpreter exit aborts
the process (rc 134).

rclpy's experimental EventsExecutor (Jazzy and later) was tried for its lower per-message cost:
with it, joint_states stopped arriving after a few seconds and close() hung (rclpy 9.1.2 wheels),
so the portable SingleThreadedExecutor stays.
"""

from __future__ import annotations

import logging
import threading

from robot_rl.ros2 import require_rclpy

log = logging.getLogger(__name__)


class NodeThread:
    """A node on a private context; see the module docstring. Owner: the thread that made it."""

    def __init__(self, name: str, *, namespace: str = "") -> None:
        rclpy = require_rclpy()
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        self._rclpy = rclpy
        self.context = Context()
        rclpy.init(context=self.context)
        try:
            self.node = rclpy.create_node(name, namespace=namespace, context=self.context)
            self.executor = SingleThreadedExecutor(context=self.context)
            self.executor.add_node(self.node)
        except BaseException:
            rclpy.shutdown(context=self.context)
            raise
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> NodeThread:
        self._thread = threading.Thread(target=self._spin, name=f"ros2-{self.node.get_name()}", daemon=True)
        self._thread.start()
        return self

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception as exc:  # context shut down under it: the normal way out on close
            if not self._closed:
                log.error("ROS 2 executor of %s stopped: %s: %s", self.node.get_name(), type(exc).__name__, exc)

    def close(self) -> None:
        """Stop spinning, join the thread, destroy the node and shut the context down. Idempotent.

        The context goes down first: that wakes a spin blocked in its wait set at once (an
        executor shutdown alone waited for it, and destroying a node a spinning executor still
        holds blocked forever)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._rclpy.try_shutdown(context=self.context)
        except Exception as exc:
            log.warning("ROS 2 shutdown: %s: %s", type(exc).__name__, exc)
        try:
            self.executor.shutdown(timeout_sec=2.0)
        except Exception as exc:
            log.warning("ROS 2 executor shutdown: %s: %s", type(exc).__name__, exc)
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                log.error("the ROS 2 executor thread of %s did not stop within 5 s", self.node.get_name())
                return
        try:
            self.node.destroy_node()
        except Exception as exc:
            log.warning("destroying ROS 2 node: %s: %s", type(exc).__name__, exc)
