"""MCAP export of recorded episodes: read back with mcap + mcap_ros2 (no rclpy) and compare to the arrays."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

from robot_rl.data.episodes import EpisodeBuffer, EpisodeWriter, iter_episodes
from robot_rl.data.mcap_export import ExportConfig, export_mcap, msg_definition, step_times_ns
from robot_rl.errors import ConfigError
from robot_rl.task_spec import load_task

VALUE_ATOL = 1e-6
"""float32 arrays exported as float64: equal to float32 precision."""
PERIOD_NS = 100_000_000
"""pick_cube steps at 10 Hz."""


def _read(path: Path):
    """(header, {topic: [(schema name, log_time, decoded)]}, {metadata name: dict}, channels by topic)."""
    by_topic: dict[str, list] = defaultdict(list)
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        header = reader.get_header()
        for schema, channel, message, decoded in reader.iter_decoded_messages(log_time_order=False):
            assert schema.encoding == "ros2msg" and channel.message_encoding == "cdr"
            by_topic[channel.topic].append((schema.name, message.log_time, decoded))
        metadata = {m.name: dict(m.metadata) for m in reader.iter_metadata()}
        channels = {c.topic: c for c in reader.get_summary().channels.values()}
    return header, by_topic, metadata, channels


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """Two short scripted pick_cube episodes with images, recorded by the CLI on the embedded twin."""
    out = tmp_path_factory.mktemp("rec") / "pick_cube"
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    subprocess.run([sys.executable, "-m", "robot_rl.cli.main", "record", "--out", str(out), "--task", "pick_cube",
                    "--teleop", "scripted", "--episodes", "2", "--max-steps", "4"],
                   check=True, env=env, capture_output=True, timeout=300)
    return out


def _synthetic(folder: Path, *, t_capture: bool) -> Path:
    """One 3-step episode written directly, state only, with or without capture times."""
    task = load_task("pick_cube")
    writer = EpisodeWriter(folder, task)
    rng = np.random.default_rng(0)
    buf = EpisodeBuffer()

    def obs():
        return {"tcp_pose": rng.normal(size=7).astype(np.float32), "tcp_vel": rng.normal(size=6).astype(np.float32),
                "gripper_width": rng.uniform(0, 0.08, 1).astype(np.float32),
                "force": rng.normal(size=3).astype(np.float32), "torque": rng.normal(size=3).astype(np.float32)}

    buf.start(obs(), {"t_capture_ns": 5_000_000_000 if t_capture else 0})
    for i in range(3):
        buf.add(rng.uniform(-1, 1, 7), obs(), float(i), False, i == 2,
                {"t_capture_ns": (5_000_000_000 + 37_000_000 * (i + 1)) if t_capture else 0}, intervention=False)
    writer.save(buf, {"source": "test"})
    return folder


def test_export_matches_the_episodes(recording: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo.mcap"
    summary = export_mcap(recording, out)
    episodes = list(iter_episodes(recording))
    assert summary["episodes"] == 2 and summary["steps"] == sum(len(e) for e in episodes)

    header, topics, metadata, channels = _read(out)
    assert header.profile == "ros2"
    expected_types = {"/robot_rl/episode": "std_msgs/msg/String",
                      "/robot_rl/joint_states": "sensor_msgs/msg/JointState",
                      "/robot_rl/tcp_pose": "geometry_msgs/msg/PoseStamped",
                      "/robot_rl/tcp_twist": "geometry_msgs/msg/TwistStamped",
                      "/robot_rl/wrench": "geometry_msgs/msg/WrenchStamped",
                      "/robot_rl/action": "std_msgs/msg/Float64MultiArray", "/robot_rl/reward": "std_msgs/msg/Float64",
                      "/robot_rl/camera/wrist/image_raw": "sensor_msgs/msg/Image",
                      "/robot_rl/camera/front/image_raw": "sensor_msgs/msg/Image",
                      "/robot_rl/obs/privileged/cube_pose": "std_msgs/msg/Float64MultiArray"}
    for topic, type_name in expected_types.items():
        assert topic in topics, f"{topic} missing; have {sorted(topics)}"
        assert {s for s, _, _ in topics[topic]} == {type_name}
        assert "offered_qos_profiles" in channels[topic].metadata  # required by the ros2 profile

    n_obs = sum(len(e) + 1 for e in episodes)
    assert len(topics["/robot_rl/tcp_pose"]) == n_obs
    assert len(topics["/robot_rl/action"]) == len(topics["/robot_rl/reward"]) == summary["steps"]
    assert len(topics["/robot_rl/episode"]) == 2

    poses = np.array([[d.pose.position.x, d.pose.position.y, d.pose.position.z, d.pose.orientation.w,
                       d.pose.orientation.x, d.pose.orientation.y, d.pose.orientation.z]
                      for _, _, d in topics["/robot_rl/tcp_pose"]])
    np.testing.assert_allclose(poses, np.concatenate([e.observation("tcp_pose") for e in episodes]), atol=VALUE_ATOL)
    widths = np.array([d.position[d.name.index("gripper_width")] for _, _, d in topics["/robot_rl/joint_states"]])
    np.testing.assert_allclose(widths, np.concatenate([e.observation("gripper_width")[:, 0] for e in episodes]),
                               atol=VALUE_ATOL)
    joints = [d for _, _, d in topics["/robot_rl/joint_states"]]
    assert joints[0].name[:7] == [f"joint{i}" for i in range(1, 8)]  # the Panda's 7 joints, recorded from info
    np.testing.assert_allclose(np.array([d.position[:7] for d in joints]),
                               np.concatenate([e.arrays["q_rad"] for e in episodes]), atol=1e-12)
    np.testing.assert_allclose(np.array([d.velocity[:7] for d in joints]),
                               np.concatenate([e.arrays["dq_rad_per_s"] for e in episodes]), atol=1e-12)
    forces = np.array([[d.wrench.force.x, d.wrench.force.y, d.wrench.force.z]
                       for _, _, d in topics["/robot_rl/wrench"]])
    np.testing.assert_allclose(forces, np.concatenate([e.observation("force") for e in episodes]), atol=VALUE_ATOL)
    actions = np.array([d.data for _, _, d in topics["/robot_rl/action"]])
    np.testing.assert_allclose(actions, np.concatenate([e.arrays["action"] for e in episodes]), atol=VALUE_ATOL)
    rewards = np.array([d.data for _, _, d in topics["/robot_rl/reward"]])
    np.testing.assert_allclose(rewards, np.concatenate([e.arrays["reward"] for e in episodes]), atol=VALUE_ATOL)

    images = topics["/robot_rl/camera/wrist/image_raw"]
    k = len(episodes[0]) + 2  # second observation of the second episode
    _, _, img = images[k]
    assert (img.encoding, img.height, img.width, img.step) == ("rgb8", 128, 128, 384)
    pixels = np.frombuffer(bytes(img.data), np.uint8).reshape(128, 128, 3)
    np.testing.assert_array_equal(pixels, episodes[1].observation("images/wrist")[1])

    # Log times: recorded intervals within an episode, episodes one after another, header stamp = log time.
    times = [t for _, t, _ in topics["/robot_rl/tcp_pose"]]
    first = np.array(times[:len(episodes[0]) + 1])
    np.testing.assert_array_equal(np.diff(first), np.diff(episodes[0].arrays["t_capture_ns"]))
    assert all(b > a for a, b in zip(times, times[1:]))
    for _, t, d in topics["/robot_rl/tcp_pose"]:
        assert d.header.stamp.sec * 1_000_000_000 + d.header.stamp.nanosec == t
    boundary = [t for _, t, _ in topics["/robot_rl/episode"]]
    assert boundary == [times[0], times[len(episodes[0]) + 1]]
    assert json.loads(topics["/robot_rl/episode"][1][2].data)["seed"] == episodes[1].meta["seed"]

    assert metadata["robot_rl"]["task"] == "pick_cube"
    assert json.loads(metadata["robot_rl"]["meta.json"])["task"] == "pick_cube"
    assert json.loads(metadata["episode_000001"]["seed"]) == episodes[1].meta["seed"]
    bag = metadata["rosbag2"]["serialized_metadata"]
    assert "rosbag2_bagfile_information" in bag and "storage_identifier: mcap" in bag
    assert f"message_count: {summary['messages']}" in bag


def test_jpeg_images_and_no_images(recording: Path, tmp_path: Path) -> None:
    export_mcap(recording, tmp_path / "j.mcap", cfg=ExportConfig(mcap=str(recording), images="jpeg"))
    _, topics, _, _ = _read(tmp_path / "j.mcap")
    _, _, msg = topics["/robot_rl/camera/front/image_raw/compressed"][0]
    assert msg.format == "jpeg"
    import cv2

    decoded = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    original = next(iter_episodes(recording)).observation("images/front")[0]
    assert np.abs(decoded.astype(int) - original).mean() < 4.0  # quality 90: small mean error

    export_mcap(recording, tmp_path / "n.mcap", cfg=ExportConfig(mcap=str(recording), images="none"))
    _, topics, _, _ = _read(tmp_path / "n.mcap")
    assert not [t for t in topics if "/camera/" in t]


def test_times_fall_back_to_step_period(tmp_path: Path) -> None:
    with_t = next(iter_episodes(_synthetic(tmp_path / "a", t_capture=True)))
    np.testing.assert_array_equal(step_times_ns(with_t, 10, PERIOD_NS), 10 + 37_000_000 * np.arange(4))
    folder = _synthetic(tmp_path / "b", t_capture=False)
    without = next(iter_episodes(folder))
    np.testing.assert_array_equal(step_times_ns(without, 10, PERIOD_NS), 10 + PERIOD_NS * np.arange(4))
    export_mcap(folder, tmp_path / "b.mcap")
    _, topics, _, _ = _read(tmp_path / "b.mcap")
    times = [t for _, t, _ in topics["/robot_rl/tcp_pose"]]
    assert np.all(np.diff(times) == PERIOD_NS)
    assert "/robot_rl/camera/wrist/image_raw" not in topics  # a state-only recording has no images


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no meta.json"):
        export_mcap(tmp_path, tmp_path / "x.mcap")
    EpisodeWriter(tmp_path / "empty", load_task("pick_cube"))
    with pytest.raises(ConfigError, match="holds no episodes"):
        export_mcap(tmp_path / "empty", tmp_path / "x.mcap")
    folder = _synthetic(tmp_path / "one", t_capture=True)
    with pytest.raises(ConfigError, match="cannot write"):
        export_mcap(folder, tmp_path / "no" / "such" / "dir" / "x.mcap")
    (tmp_path / "exists.mcap").write_bytes(b"")
    with pytest.raises(ConfigError, match="exists"):
        export_mcap(folder, tmp_path / "exists.mcap", cfg=ExportConfig(mcap=str(folder), overwrite=False))


def test_definitions_are_ros2_concatenated() -> None:
    text = msg_definition("geometry_msgs/PoseStamped")
    assert text.startswith("std_msgs/Header header\nPose pose\n")
    for dep in ("std_msgs/Header", "builtin_interfaces/Time", "geometry_msgs/Pose", "geometry_msgs/Point",
                "geometry_msgs/Quaternion"):
        assert f"{'=' * 80}\nMSG: {dep}\n" in text


def test_cli_exports_without_rclpy(tmp_path: Path) -> None:
    """The CLI writes the file and prints a JSON summary; the export never imports rclpy."""
    folder = _synthetic(tmp_path / "rec", t_capture=True)
    code = ("import sys; sys.argv = ['robot-rl', 'export', '--mcap', sys.argv[1], '--out', sys.argv[2]]\n"
            "from robot_rl.cli.main import main\nrc = main(sys.argv[1:])\n"
            "assert 'rclpy' not in sys.modules, 'mcap export imported rclpy'\nsys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(folder), str(tmp_path / "out.mcap")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == 1 and (tmp_path / "out.mcap").stat().st_size > 0
    proc = subprocess.run([sys.executable, "-m", "robot_rl.cli.main", "export", "--mcap", str(tmp_path / "nothing")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "is not a folder" in proc.stderr
