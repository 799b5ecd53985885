"""ROS 2 image topics as robot_rl cameras: `driver: ros2` entries of a camera config.

    cameras:
      - driver: ros2
        name: front
        topic: /camera/color/image_raw        # sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8)
        # compressed: true                    # sensor_msgs/CompressedImage (jpeg, png) on .../compressed
        output: {height: 128, width: 128, crop_xywh: [80, 0, 480, 480]}

Newest-frame semantics, as the other drivers: the subscription is best effort with depth 1, and
only the newest processed frame is kept. Frames are converted to RGB, cropped and resized on the
spin thread. A message that cannot be used (another encoding, a size that does not match its
step, a crop larger than the image, a corrupt JPEG) is dropped, with a warning at most once a
second per camera.

Clocks: `t_capture_ns` comes from `header.stamp`. ROS camera drivers stamp with ROS time, which is
the wall clock (CLOCK_REALTIME) unless the graph runs on simulated time, while every robot_rl stamp
is the robot PC's CLOCK_MONOTONIC. A stamp within a day of the wall clock is taken as wall time and
moved to the monotonic clock by the current offset between the two clocks (so it assumes the
publisher's clock is this PC's, or synchronized to it by PTP/chrony); any other non-zero stamp is
taken as monotonic already (a publisher on this PC stamping `t_capture_ns`, as robot_rl's own
nodes do); a zero stamp (an unstamped driver) is replaced by the receive time.

This module imports rclpy only when a camera starts, so camera configs load without ROS 2.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from robot_rl.drivers.camera import Frame, ImageTransform
from robot_rl.errors import ConfigError, DeviceNotFound

log = logging.getLogger(__name__)

WALL_CLOCK_WINDOW_NS = 86_400 * 1_000_000_000
"""A stamp closer than this (a day) to the wall clock is read as wall time; the monotonic clock
counts from boot, so it is decades away from the wall clock's epoch-based values."""
DROP_LOG_PERIOD_NS = 1_000_000_000
"""Dropped messages are reported at most once per this period, per camera."""


@dataclass(frozen=True)
class Ros2CameraConfig:
    """One camera read from a ROS 2 image topic; images are cropped and resized on the robot PC."""

    name: str
    """Camera name the task and the wire use, e.g. "front"."""
    topic: str
    """Image topic, e.g. /camera/color/image_raw (sensor_msgs/Image), or its /compressed
    (sensor_msgs/CompressedImage) with `compressed: true`."""
    compressed: bool = False
    """The topic carries sensor_msgs/CompressedImage (jpeg or png) instead of sensor_msgs/Image."""
    output: ImageTransform = field(default_factory=lambda: ImageTransform(height=128, width=128))
    """Crop (in source pixels) then resize applied to every frame."""
    first_frame_timeout_s: float = 5.0
    """The first image must arrive within this time, or `start()` raises DeviceNotFound."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("Ros2CameraConfig.name must be a non-empty camera name")
        if not isinstance(self.topic, str) or not self.topic.startswith("/") or " " in self.topic:
            raise ConfigError(f"topic must be an absolute ROS 2 topic name like /camera/color/image_raw, "
                              f"got {self.topic!r}")
        if not 0 < self.first_frame_timeout_s <= 600:
            raise ConfigError(f"first_frame_timeout_s must be in (0, 600], got {self.first_frame_timeout_s}")


def capture_monotonic_ns(stamp_ns: int, *, wall_now_ns: int, monotonic_now_ns: int) -> int:
    """A header stamp [ns] on the robot PC's monotonic clock (see the module docstring).

    Args:
        stamp_ns: `header.stamp` in nanoseconds.
        wall_now_ns: `time.time_ns()` read next to `monotonic_now_ns`.
        monotonic_now_ns: `time.monotonic_ns()`, the receive time.
    """
    if stamp_ns <= 0:
        return monotonic_now_ns
    if abs(stamp_ns - wall_now_ns) < WALL_CLOCK_WINDOW_NS:
        return stamp_ns - (wall_now_ns - monotonic_now_ns)
    return stamp_ns


class _SharedNode:
    """One node and executor thread for all ROS cameras of a process, reference-counted.

    `acquire()` / `release()` from any thread (guarded by a lock); the last release stops the
    executor and joins its thread (required before the process exits).
    """

    _lock = threading.Lock()
    _link: Any = None
    _users = 0
    _atexit = False

    @classmethod
    def acquire(cls) -> Any:
        from robot_rl.ros2.node_thread import NodeThread

        with cls._lock:
            if cls._link is None:
                cls._link = NodeThread("robot_rl_cameras").start()
                if not cls._atexit:  # a camera its owner never stopped must not abort the exit
                    atexit.register(cls._close_at_exit)
                    cls._atexit = True
            cls._users += 1
            return cls._link

    @classmethod
    def release(cls) -> None:
        with cls._lock:
            cls._users -= 1
            if cls._users == 0 and cls._link is not None:
                link, cls._link = cls._link, None
                link.close()


    @classmethod
    def _close_at_exit(cls) -> None:
        with cls._lock:
            link, cls._link, cls._users = cls._link, None, 0
        if link is not None:
            link.close()


class Ros2Camera:
    """A camera fed by a ROS 2 image topic (`CameraDriver`).

    Threading: the owner calls `start()` once (subscribes, then waits for the first frame in the
    caller's thread, so a silent topic raises there), `latest()` from any thread, `stop()` once.
    The shared executor thread runs the callback, the only writer of the newest frame (one
    reference assignment). `stop()` destroys the subscription and, for the last ROS camera of the
    process, stops and joins the executor thread.

    Args:
        config: the camera's settings.
    """

    def __init__(self, config: Ros2CameraConfig) -> None:
        self.config = config
        self.name = config.name
        self.transform = config.output
        self.height, self.width = config.output.height, config.output.width
        self._latest: Frame | None = None
        self._seq = 0
        self._link: Any = None
        self._sub: Any = None
        self._dropped = 0
        self._last_drop_log_ns = 0
        self.source_size: tuple[int, int] | None = None
        """(height, width) of the newest image on the topic, before crop and resize."""

    def start(self) -> None:
        """Subscribe and wait for the first frame.

        Raises:
            DependencyMissing: rclpy is not importable.
            DeviceNotFound: no usable image within `first_frame_timeout_s`.
        """
        cfg = self.config
        from robot_rl.ros2.qos import sensor_qos

        if cfg.compressed:
            from sensor_msgs.msg import CompressedImage as msg_type
        else:
            from sensor_msgs.msg import Image as msg_type
        self._link = _SharedNode.acquire()
        try:
            self._sub = self._link.node.create_subscription(msg_type, cfg.topic, self._on_image, sensor_qos(depth=1))
            deadline = time.monotonic() + cfg.first_frame_timeout_s
            while self._latest is None:
                if time.monotonic() > deadline:
                    kind = "sensor_msgs/CompressedImage" if cfg.compressed else "sensor_msgs/Image"
                    why = (f"{self._dropped} message(s) arrived but were dropped (see the warnings)" if self._dropped
                           else "nothing arrived")
                    raise DeviceNotFound(
                        f"camera {cfg.name!r}: no usable {kind} on {cfg.topic} within {cfg.first_frame_timeout_s} s "
                        f"({why}); check that its driver runs and publishes (`ros2 topic hz {cfg.topic}`), in the "
                        "same ROS_DOMAIN_ID, and that `compressed:` matches the topic's type")
                time.sleep(0.005)
        except BaseException:
            self.stop()
            raise
        log.info("camera %s: %s delivering %s", cfg.name, cfg.topic, self.source_size)

    def _on_image(self, msg: Any) -> None:
        t_receive_ns = time.monotonic_ns()
        wall_ns = time.time_ns()
        from robot_rl.ros2 import messages

        try:
            rgb = messages.rgb_of_compressed(msg) if self.config.compressed else messages.rgb_of_image(msg)
            image = self.transform.apply(rgb)
        except Exception as exc:  # ValueError / ConfigError for a bad image; anything else must not stop spinning
            self._drop(exc)
            return
        self.source_size = rgb.shape[:2]
        stamp_ns = messages.ns_of_stamp(msg.header.stamp)
        t_capture_ns = capture_monotonic_ns(stamp_ns, wall_now_ns=wall_ns, monotonic_now_ns=t_receive_ns)
        self._seq += 1
        self._latest = Frame(self.name, self._seq, t_capture_ns, t_receive_ns, image)

    def _drop(self, exc: Exception) -> None:
        self._dropped += 1
        now = time.monotonic_ns()
        if now - self._last_drop_log_ns >= DROP_LOG_PERIOD_NS:
            self._last_drop_log_ns = now
            log.warning("camera %s: dropped a message from %s (%d so far): %s", self.name, self.config.topic,
                        self._dropped, exc)

    @property
    def dropped(self) -> int:
        """Messages dropped as unusable since `start()`."""
        return self._dropped

    def latest(self) -> Frame | None:
        return self._latest

    def wait_next(self, after_seq: int, timeout_s: float = 5.0) -> Frame:
        """The first frame newer than `after_seq` (tests, tools).

        Raises:
            TimeoutError: none within `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            frame = self._latest
            if frame is not None and frame.seq > after_seq:
                return frame
            time.sleep(0.002)
        raise TimeoutError(f"camera {self.name} ({self.config.topic}) delivered no new frame within {timeout_s} s")

    def stop(self) -> None:
        """Unsubscribe; the last ROS camera of the process also stops the executor thread. Idempotent."""
        link, self._link = self._link, None
        if link is None:
            return
        if self._sub is not None:
            try:
                link.node.destroy_subscription(self._sub)
            except Exception as exc:  # the context may already be shut down
                log.debug("camera %s: destroy_subscription: %s", self.name, exc)
            self._sub = None
        _SharedNode.release()
