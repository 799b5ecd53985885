"""Conversions between robot_rl's arrays and standard ROS 2 messages (no node, no I/O).

Conventions: poses are robot_rl's `[x, y, z, qw, qx, qy, qz]` (m, unit quaternion w first);
ROS quaternions are x, y, z, w. Wrenches are `[fx, fy, fz, tx, ty, tz]` (N, N·m), twists
`[vx, vy, vz, wx, wy, wz]` (m/s, rad/s). Stamps are nanoseconds on the bridge's capture clock
(`t_capture_ns`, CLOCK_MONOTONIC on the robot PC) carried in `header.stamp` unchanged, so a
subscriber compares them with the bridge's own timestamps.

Decoders (`*_of`) validate: a wrong shape, encoding or a non-finite value raises ValueError with
what was wrong; callers on the robot PC catch it and drop the message.
"""

from __future__ import annotations

import math

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped, TwistStamped, WrenchStamped
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState
from std_msgs.msg import Header

NS_PER_S = 1_000_000_000


def stamp_of_ns(t_ns: int) -> Time:
    """builtin_interfaces/Time of a nanosecond timestamp (≥ 0)."""
    t_ns = int(t_ns)
    return Time(sec=t_ns // NS_PER_S, nanosec=t_ns % NS_PER_S)


def ns_of_stamp(stamp: Time) -> int:
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def header(t_ns: int, frame_id: str) -> Header:
    return Header(stamp=stamp_of_ns(t_ns), frame_id=frame_id)


def joint_state(t_ns: int, names: list[str], q_rad: np.ndarray, dq_rad_per_s: np.ndarray,
                tau_nm: np.ndarray | None = None) -> JointState:
    msg = JointState(header=header(t_ns, ""), name=list(names))
    msg.position = [float(v) for v in q_rad]
    msg.velocity = [float(v) for v in dq_rad_per_s]
    if tau_nm is not None:
        msg.effort = [float(v) for v in tau_nm]
    return msg


def pose_stamped(t_ns: int, frame_id: str, pose: np.ndarray) -> PoseStamped:
    msg = PoseStamped(header=header(t_ns, frame_id))
    p, o = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z = float(pose[0]), float(pose[1]), float(pose[2])
    o.w, o.x, o.y, o.z = float(pose[3]), float(pose[4]), float(pose[5]), float(pose[6])
    return msg


def wrench_stamped(t_ns: int, frame_id: str, wrench: np.ndarray) -> WrenchStamped:
    msg = WrenchStamped(header=header(t_ns, frame_id))
    f, t = msg.wrench.force, msg.wrench.torque
    f.x, f.y, f.z = float(wrench[0]), float(wrench[1]), float(wrench[2])
    t.x, t.y, t.z = float(wrench[3]), float(wrench[4]), float(wrench[5])
    return msg


def twist_stamped(t_ns: int, frame_id: str, twist: np.ndarray) -> TwistStamped:
    msg = TwistStamped(header=header(t_ns, frame_id))
    v, w = msg.twist.linear, msg.twist.angular
    v.x, v.y, v.z = float(twist[0]), float(twist[1]), float(twist[2])
    w.x, w.y, w.z = float(twist[3]), float(twist[4]), float(twist[5])
    return msg


def _finite(values: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what} has a non-finite value: {values.tolist()}")
    return values


def pose_of(msg: PoseStamped) -> np.ndarray:
    """`[x, y, z, qw, qx, qy, qz]` with a normalized quaternion.

    Raises:
        ValueError: a non-finite value, or a quaternion far from unit norm (not a rotation).
    """
    p, o = msg.pose.position, msg.pose.orientation
    pose = _finite(np.array([p.x, p.y, p.z, o.w, o.x, o.y, o.z], dtype=np.float64), "pose")
    n = math.sqrt(float(pose[3:] @ pose[3:]))
    if abs(n - 1.0) > 0.01:
        raise ValueError(f"pose quaternion has norm {n:.4f}, not 1")
    pose[3:] /= n
    return pose


def wrench_of(msg: WrenchStamped) -> np.ndarray:
    f, t = msg.wrench.force, msg.wrench.torque
    return _finite(np.array([f.x, f.y, f.z, t.x, t.y, t.z], dtype=np.float64), "wrench")


def twist_of(msg: TwistStamped) -> np.ndarray:
    v, w = msg.twist.linear, msg.twist.angular
    return _finite(np.array([v.x, v.y, v.z, w.x, w.y, w.z], dtype=np.float64), "twist")


def joints_of(msg: JointState, names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(q [rad], dq [rad/s], effort [N·m] or None) in the order of `names`, whatever the message's
    order (drivers publish gripper and arm joints in one message, in their own order).

    Raises:
        ValueError: a joint of `names` is missing, the arrays' lengths disagree, or a value is not finite.
    """
    index = {n: i for i, n in enumerate(msg.name)}
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f"joint_states lacks joints {missing} (has {list(msg.name)})")
    if len(msg.position) != len(msg.name):
        raise ValueError(f"joint_states has {len(msg.name)} names but {len(msg.position)} positions")
    pick = [index[n] for n in names]
    q = _finite(np.asarray(msg.position, dtype=np.float64)[pick], "joint positions")
    dq = (_finite(np.asarray(msg.velocity, dtype=np.float64)[pick], "joint velocities")
          if len(msg.velocity) == len(msg.name) else np.zeros(len(names)))
    effort = (_finite(np.asarray(msg.effort, dtype=np.float64)[pick], "joint efforts")
              if len(msg.effort) == len(msg.name) else None)
    return q, dq, effort


ENCODINGS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}


def image_msg(t_ns: int, frame_id: str, rgb: np.ndarray) -> Image:
    """sensor_msgs/Image (rgb8) of an (H, W, 3) uint8 array."""
    h, w = rgb.shape[:2]
    msg = Image(header=header(t_ns, frame_id), height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3)
    msg.data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    return msg


def rgb_of_image(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an 8-bit rgb8 / bgr8 / rgba8 / bgra8 / mono8 Image (row padding allowed).

    Raises:
        ValueError: another encoding, or a data size that does not match height × step.
    """
    channels = ENCODINGS.get(msg.encoding)
    if channels is None:
        raise ValueError(f"image encoding {msg.encoding!r} is not supported (use one of {sorted(ENCODINGS)})")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, (bytes, bytearray, memoryview))
                         else msg.data, dtype=np.uint8)
    if h == 0 or w == 0 or step < w * channels or data.size != h * step:
        raise ValueError(f"image {w}×{h} {msg.encoding} with step {step} has {data.size} bytes, "
                         f"expected {h * step} (step ≥ {w * channels})")
    img = data.reshape(h, step)[:, :w * channels].reshape(h, w, channels)
    if msg.encoding == "mono8":
        return np.repeat(img, 3, axis=2)
    if msg.encoding.startswith("bgr"):
        img = img[:, :, 2::-1]
    return np.ascontiguousarray(img[:, :, :3])


def rgb_of_compressed(msg: CompressedImage) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a jpeg / png CompressedImage.

    Raises:
        ValueError: the data does not decode as an image.
    """
    import cv2

    bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"compressed image ({msg.format!r}, {len(msg.data)} bytes) does not decode")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def camera_info(t_ns: int, frame_id: str, width: int, height: int, fovy_deg: float) -> CameraInfo:
    """A pinhole CameraInfo (no distortion) from the vertical field of view."""
    f = 0.5 * height / math.tan(math.radians(fovy_deg) / 2)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    msg = CameraInfo(header=header(t_ns, frame_id), width=width, height=height, distortion_model="plumb_bob")
    msg.d = [0.0] * 5
    msg.k = [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg
