"""Recorded episodes as a ROS 2-typed MCAP file (`robot-rl export --mcap`), for Foxglove and `ros2 bag`.

No ROS installation is needed: messages are CDR-serialized by mcap-ros2-support from the message
definitions below (ROS 2's concatenated-dependency `.msg` text, as rosbag2 stores them), so this
runs on the learner side without rclpy.

Layout of the file (profile "ros2", schemas "ros2msg", messages "cdr"):

    /robot_rl/episode                       std_msgs/String            JSON meta of each episode, at its start
    /robot_rl/joint_states                  sensor_msgs/JointState     gripper width [m] as joint "gripper_width";
                                                                       and the arm's joint1… (recorded q_rad, dq)
    /robot_rl/tcp_pose                      geometry_msgs/PoseStamped  frame "base"
    /robot_rl/tcp_twist                     geometry_msgs/TwistStamped frame "base"
    /robot_rl/wrench                        geometry_msgs/WrenchStamped external wrench, frame "base"
    /robot_rl/action                        std_msgs/Float64MultiArray the policy's action (7,)
    /robot_rl/reward                        std_msgs/Float64
    /robot_rl/obs/<key>                     std_msgs/Float64MultiArray any other state vector (privileged/…)
    /robot_rl/camera/<name>/image_raw       sensor_msgs/Image rgb8 (default), or
    /robot_rl/camera/<name>/image_raw/compressed  sensor_msgs/CompressedImage jpeg (`--images jpeg`)

Timing: observation t is logged at its capture time, action t with observation t (it was chosen
from it), reward t with observation t + 1 (it came back with it). Capture clocks differ between
recordings (robot-PC monotonic, or simulated time on a stepped twin), so each episode keeps its
recorded intervals but is placed on one timeline: the first starts at the recording's creation
time (wall clock, so viewers show a sensible date), each next one a step period after the last
ended. Episodes without usable capture times (missing, zero or not increasing) use step × period.
Header stamps equal log times.

Images default to raw rgb8: recordings are small (128×128), and raw keeps the pixels the policy
was trained on bit-exact; jpeg (quality 90) makes files ~10× smaller for long or large recordings.

MCAP metadata: "robot_rl" (task, meta.json), "episode_NNNNNN" per episode (its meta), and
"rosbag2" (`serialized_metadata`, what `ros2 bag info` shows); every channel carries the
`offered_qos_profiles` the ros2 profile requires.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from robot_rl.data.episodes import Episode, episode_paths, iter_episodes, read_meta
from robot_rl.errors import ConfigError

log = logging.getLogger(__name__)

_SEP = "=" * 80
_DEFS = {
    "builtin_interfaces/Time": "int32 sec\nuint32 nanosec",
    "std_msgs/Header": "builtin_interfaces/Time stamp\nstring frame_id",
    "geometry_msgs/Point": "float64 x\nfloat64 y\nfloat64 z",
    "geometry_msgs/Quaternion": "float64 x 0\nfloat64 y 0\nfloat64 z 0\nfloat64 w 1",
    "geometry_msgs/Vector3": "float64 x\nfloat64 y\nfloat64 z",
    "geometry_msgs/Pose": "Point position\nQuaternion orientation",
    "geometry_msgs/Twist": "Vector3 linear\nVector3 angular",
    "geometry_msgs/Wrench": "Vector3 force\nVector3 torque",
    "geometry_msgs/PoseStamped": "std_msgs/Header header\nPose pose",
    "geometry_msgs/TwistStamped": "std_msgs/Header header\nTwist twist",
    "geometry_msgs/WrenchStamped": "std_msgs/Header header\nWrench wrench",
    "sensor_msgs/JointState": ("std_msgs/Header header\nstring[] name\nfloat64[] position\nfloat64[] velocity\n"
                               "float64[] effort"),
    "sensor_msgs/Image": ("std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\n"
                          "uint8 is_bigendian\nuint32 step\nuint8[] data"),
    "sensor_msgs/CompressedImage": "std_msgs/Header header\nstring format\nuint8[] data",
    "std_msgs/MultiArrayDimension": "string label\nuint32 size\nuint32 stride",
    "std_msgs/MultiArrayLayout": "MultiArrayDimension[] dim\nuint32 data_offset",
    "std_msgs/Float64MultiArray": "MultiArrayLayout layout\nfloat64[] data",
    "std_msgs/Float64": "float64 data",
    "std_msgs/String": "string data",
}
_DEPS = {
    "std_msgs/Header": ["builtin_interfaces/Time"],
    "geometry_msgs/Pose": ["geometry_msgs/Point", "geometry_msgs/Quaternion"],
    "geometry_msgs/Twist": ["geometry_msgs/Vector3"],
    "geometry_msgs/Wrench": ["geometry_msgs/Vector3"],
    "geometry_msgs/PoseStamped": ["std_msgs/Header", "geometry_msgs/Pose"],
    "geometry_msgs/TwistStamped": ["std_msgs/Header", "geometry_msgs/Twist"],
    "geometry_msgs/WrenchStamped": ["std_msgs/Header", "geometry_msgs/Wrench"],
    "sensor_msgs/JointState": ["std_msgs/Header"],
    "sensor_msgs/Image": ["std_msgs/Header"],
    "sensor_msgs/CompressedImage": ["std_msgs/Header"],
    "std_msgs/MultiArrayLayout": ["std_msgs/MultiArrayDimension"],
    "std_msgs/Float64MultiArray": ["std_msgs/MultiArrayLayout"],
}


def msg_definition(type_name: str) -> str:
    """ROS 2 concatenated definition of `type_name` ("pkg/Name"): its own text, then each
    dependency (depth first, once) after a `===` line and `MSG: pkg/Name`."""
    order: list[str] = []

    def visit(name: str) -> None:
        for dep in _DEPS.get(name, []):
            if dep not in order:
                visit(dep)
                order.append(dep)

    visit(type_name)
    parts = [_DEFS[type_name]] + [f"{_SEP}\nMSG: {dep}\n{_DEFS[dep]}" for dep in reversed(order)]
    return "\n".join(parts) + "\n"


def schema_name(type_name: str) -> str:
    """rosbag2's schema name: "sensor_msgs/Image" → "sensor_msgs/msg/Image"."""
    pkg, name = type_name.split("/")
    return f"{pkg}/msg/{name}"


# rosbag2's default offered QoS (reliable, volatile, keep last), as its MCAP plugin writes it.
_QOS_YAML = ("- history: 3\n  depth: 0\n  reliability: 1\n  durability: 2\n"
             "  deadline:\n    sec: 9223372036\n    nsec: 854775807\n"
             "  lifespan:\n    sec: 9223372036\n    nsec: 854775807\n  liveliness: 1\n"
             "  liveliness_lease_duration:\n    sec: 9223372036\n    nsec: 854775807\n"
             "  avoid_ros_namespace_conventions: false\n")

NS = "/robot_rl"


@dataclass(frozen=True)
class ExportConfig:
    """`robot-rl export`: write recorded episodes as a ROS 2-typed MCAP file."""

    mcap: str
    """Recording folder (with meta.json and episode_*.npz), e.g. runs/demos/pick_cube."""
    out: str | None = None
    """Output file; default: <folder>.mcap beside the folder."""
    images: Literal["raw", "jpeg", "none"] = "raw"
    """Camera images as sensor_msgs/Image rgb8 (lossless), CompressedImage jpeg, or left out."""
    jpeg_quality: int = 90
    """JPEG quality (1–100) with --images jpeg."""
    overwrite: bool = True
    """Replace an existing output file (False: refuse)."""

    def __post_init__(self) -> None:
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")


def _period_ns(meta: dict[str, Any]) -> int:
    hz = float(((meta.get("task_spec") or {}).get("step_hz")) or 10.0)
    return int(round(1e9 / hz)) if hz > 0 else 100_000_000


def step_times_ns(episode: Episode, start_ns: int, period_ns: int) -> np.ndarray:
    """Log time [ns] of each observation (T + 1,): recorded intervals from `start_ns`, or step × period.

    Recorded capture times are used when there is one per observation, strictly increasing.
    """
    n = len(episode) + 1
    t = episode.arrays.get("t_capture_ns")
    if t is not None and t.shape == (n,) and (n == 1 or np.all(np.diff(t) > 0)):
        return start_ns + (t.astype(np.int64) - int(t[0]))
    return start_ns + np.arange(n, dtype=np.int64) * period_ns


def _stamp(t_ns: int) -> dict[str, int]:
    return {"sec": int(t_ns) // 1_000_000_000, "nanosec": int(t_ns) % 1_000_000_000}


def _header(t_ns: int, frame_id: str) -> dict[str, Any]:
    return {"stamp": _stamp(t_ns), "frame_id": frame_id}


def _vec(v: np.ndarray) -> dict[str, float]:
    return {"x": float(v[0]), "y": float(v[1]), "z": float(v[2])}


def _multiarray(label: str, values: np.ndarray) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64).ravel()
    return {"layout": {"dim": [{"label": label, "size": values.size, "stride": values.size}], "data_offset": 0},
            "data": values.tolist()}


class _Out:
    """An MCAP writer with ROS 2 channels registered on first use."""

    def __init__(self, stream) -> None:
        from mcap.writer import CompressionType, Writer
        from mcap_ros2 import __version__

        self.writer = Writer(stream, compression=CompressionType.ZSTD)
        self.writer.start(profile="ros2", library=f"robot_rl mcap-ros2-support/{__version__}")
        self._schemas: dict[str, tuple[int, Any]] = {}
        self._channels: dict[str, tuple[int, Any]] = {}
        self.counts: dict[str, int] = {}
        self.types: dict[str, str] = {}

    def write(self, topic: str, type_name: str, msg: dict[str, Any], t_ns: int) -> None:
        from mcap_ros2._dynamic import serialize_dynamic

        if topic not in self._channels:
            if type_name not in self._schemas:
                name = schema_name(type_name)
                text = msg_definition(type_name)
                sid = self.writer.register_schema(name=name, encoding="ros2msg", data=text.encode())
                self._schemas[type_name] = (sid, serialize_dynamic(name, text)[name])
            sid, encode = self._schemas[type_name]
            cid = self.writer.register_channel(topic=topic, message_encoding="cdr", schema_id=sid,
                                               metadata={"offered_qos_profiles": _QOS_YAML})
            self._channels[topic] = (cid, encode)
            self.types[topic] = schema_name(type_name)
        cid, encode = self._channels[topic]
        seq = self.counts.get(topic, 0)
        self.writer.add_message(channel_id=cid, log_time=int(t_ns), publish_time=int(t_ns), sequence=seq,
                                data=encode(msg))
        self.counts[topic] = seq + 1


def _write_episode(out: _Out, ep: Episode, index: int, times: np.ndarray, cfg: ExportConfig) -> None:
    a = ep.arrays
    out.write(f"{NS}/episode", "std_msgs/String",
              {"data": json.dumps({"episode": index, "file": ep.path.name, **ep.meta})}, int(times[0]))
    obs_keys = sorted(k[4:] for k in a if k.startswith("obs/"))
    done = {"tcp_pose", "tcp_vel", "force", "torque", "gripper_width", "q", "dq"}
    for t in range(len(times)):
        t_ns = int(times[t])
        names: list[str] = []
        position: list[float] = []
        velocity: list[float] = []
        q_key = "q_rad" if "q_rad" in a else "obs/q"
        if q_key in a:
            q = np.asarray(a[q_key][t], dtype=np.float64)
            names += [f"joint{i + 1}" for i in range(q.size)]
            position += q.tolist()
            dq = a.get("dq_rad_per_s" if q_key == "q_rad" else "obs/dq")
            velocity += (np.asarray(dq[t], dtype=np.float64).tolist() if dq is not None else [0.0] * q.size)
        if "obs/gripper_width" in a:
            names.append("gripper_width")
            position.append(float(a["obs/gripper_width"][t][0]))
            velocity.append(0.0)
        if names:
            out.write(f"{NS}/joint_states", "sensor_msgs/JointState",
                      {"header": _header(t_ns, ""), "name": names, "position": position, "velocity": velocity,
                       "effort": []}, t_ns)
        if "obs/tcp_pose" in a:
            p = a["obs/tcp_pose"][t]
            out.write(f"{NS}/tcp_pose", "geometry_msgs/PoseStamped",
                      {"header": _header(t_ns, "base"),
                       "pose": {"position": _vec(p[:3]), "orientation": {"x": float(p[4]), "y": float(p[5]),
                                                                          "z": float(p[6]), "w": float(p[3])}}},
                      t_ns)
        if "obs/tcp_vel" in a:
            v = a["obs/tcp_vel"][t]
            out.write(f"{NS}/tcp_twist", "geometry_msgs/TwistStamped",
                      {"header": _header(t_ns, "base"), "twist": {"linear": _vec(v[:3]), "angular": _vec(v[3:])}},
                      t_ns)
        if "obs/force" in a and "obs/torque" in a:
            out.write(f"{NS}/wrench", "geometry_msgs/WrenchStamped",
                      {"header": _header(t_ns, "base"),
                       "wrench": {"force": _vec(a["obs/force"][t]), "torque": _vec(a["obs/torque"][t])}}, t_ns)
        for key in obs_keys:
            if key in done:
                continue
            value = a[f"obs/{key}"][t]
            if key.startswith("images/"):
                _write_image(out, key[len("images/"):], value, t_ns, cfg)
            elif np.issubdtype(value.dtype, np.number) and value.ndim <= 1:
                out.write(f"{NS}/obs/{key}", "std_msgs/Float64MultiArray", _multiarray(key, value), t_ns)
        if t < len(ep):
            out.write(f"{NS}/action", "std_msgs/Float64MultiArray", _multiarray("action", a["action"][t]), t_ns)
        if t > 0:
            out.write(f"{NS}/reward", "std_msgs/Float64", {"data": float(a["reward"][t - 1])}, t_ns)


def _write_image(out: _Out, camera: str, image: np.ndarray, t_ns: int, cfg: ExportConfig) -> None:
    if cfg.images == "none":
        return
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ConfigError(f"camera {camera}: expected (H, W, 3) uint8 images, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    header = _header(t_ns, f"{camera}_camera")
    if cfg.images == "raw":
        out.write(f"{NS}/camera/{camera}/image_raw", "sensor_msgs/Image",
                  {"header": header, "height": h, "width": w, "encoding": "rgb8", "is_bigendian": 0, "step": 3 * w,
                   "data": np.ascontiguousarray(image).tobytes()}, t_ns)
        return
    import cv2

    ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]),
                            [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
    if not ok:
        raise ConfigError(f"camera {camera}: JPEG encoding of a {w}x{h} image failed")
    out.write(f"{NS}/camera/{camera}/image_raw/compressed", "sensor_msgs/CompressedImage",
              {"header": header, "format": "jpeg", "data": jpeg.tobytes()}, t_ns)


def _rosbag2_metadata(out: _Out, start_ns: int, end_ns: int) -> dict[str, str]:
    """rosbag2's `serialized_metadata` (YAML; what `ros2 bag info` prints for a bag folder)."""
    topics = "".join(
        f"    - topic_metadata:\n        name: {topic}\n        type: {out.types[topic]}\n"
        f"        serialization_format: cdr\n        offered_qos_profiles: \"\"\n"
        f"      message_count: {count}\n"
        for topic, count in out.counts.items())
    yaml_text = ("rosbag2_bagfile_information:\n  version: 5\n  storage_identifier: mcap\n"
                 f"  duration:\n    nanoseconds: {end_ns - start_ns}\n"
                 f"  starting_time:\n    nanoseconds_since_epoch: {start_ns}\n"
                 f"  message_count: {sum(out.counts.values())}\n"
                 f"  topics_with_message_count:\n{topics}"
                 "  compression_format: \"\"\n  compression_mode: \"\"\n")
    return {"serialized_metadata": yaml_text}


class _Progress:
    """A rich bar on a terminal; one stderr line per episode when piped (logs, CI)."""

    def __init__(self) -> None:
        self._bar = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import Progress

            self._bar = Progress(console=Console(stderr=True))
            self._bar.start()
            self._task = self._bar.add_task("export mcap", total=None)

    def __call__(self, done: int, total: int, ep: Episode) -> None:
        log.info("exported %s (%d steps), %d/%d", ep.path.name, len(ep), done, total)
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total)
        else:
            print(f"robot-rl export: {ep.path.name} ({len(ep)} steps) {done}/{total}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def export_mcap(folder: str | Path, out_path: str | Path, *, cfg: ExportConfig | None = None) -> dict[str, Any]:
    """Write every episode of `folder` into one MCAP file; returns a summary.

    Raises:
        ConfigError: the folder is not a recording or holds no episodes, or the output cannot be written.
    """
    cfg = cfg or ExportConfig(mcap=str(folder))
    folder, out_path = Path(folder), Path(out_path)
    paths = episode_paths(folder)
    if not paths:
        raise ConfigError(f"{folder} holds no episodes (episode_*.npz); record some with `robot-rl record`")
    if out_path.exists() and not cfg.overwrite:
        raise ConfigError(f"{out_path} exists; pass --overwrite or choose another --out")
    meta = read_meta(folder)
    period_ns = _period_ns(meta)
    tmp = out_path.with_name(out_path.name + ".tmp")
    try:
        stream = open(tmp, "wb")
    except OSError as exc:
        raise ConfigError(f"cannot write {out_path} ({exc.strerror}): choose a writable --out") from exc
    t_start = time.monotonic()
    progress = _Progress()
    start_ns = next_ns = int(float(meta.get("created_unix_s") or 0.0) * 1e9)
    n_steps = 0
    try:
        with stream:
            out = _Out(stream)
            out.writer.add_metadata("robot_rl", {"task": str(meta.get("task")), "meta.json": json.dumps(meta),
                                                 "source": str(folder.resolve())})
            for i, ep in enumerate(iter_episodes(folder)):
                times = step_times_ns(ep, next_ns, period_ns)
                _write_episode(out, ep, i, times, cfg)
                out.writer.add_metadata(ep.path.stem, {k: json.dumps(v) for k, v in ep.meta.items()})
                next_ns = int(times[-1]) + period_ns
                n_steps += len(ep)
                progress(i + 1, len(paths), ep)
            out.writer.add_metadata("rosbag2", _rosbag2_metadata(out, start_ns, next_ns - period_ns))
            out.writer.finish()
        tmp.replace(out_path)
    except OSError as exc:
        progress.close()
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"writing {out_path} failed ({exc.strerror or exc}): check the disk and --out") from exc
    except BaseException:
        progress.close()
        tmp.unlink(missing_ok=True)
        raise
    progress.close()
    return {"out": str(out_path), "episodes": len(paths), "steps": n_steps, "messages": sum(out.counts.values()),
            "topics": sorted(out.counts), "bytes": out_path.stat().st_size,
            "wall_s": round(time.monotonic() - t_start, 2)}


def run(cfg: ExportConfig) -> dict[str, Any]:
    """`robot-rl export --mcap FOLDER [--out FILE.mcap]`: export, then print the summary as one JSON line."""
    folder = Path(cfg.mcap)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder; pass a recording made by `robot-rl record --out`")
    out = Path(cfg.out) if cfg.out is not None else folder.resolve().with_suffix(".mcap")
    summary = export_mcap(folder, out, cfg=cfg)
    print(json.dumps(summary), flush=True)
    return summary
