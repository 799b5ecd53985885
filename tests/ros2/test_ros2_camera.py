"""ROS 2 image topics as cameras: the twin camera node in its own process, the `ros2` driver here,
and `robot-rl serve --cameras hardware/cameras/ros2_twin.yaml` serving those frames."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from robot_rl.drivers.camera import ImageTransform
from robot_rl.drivers.camera_config import build_cameras, load_camera_configs
from robot_rl.errors import DeviceNotFound
from robot_rl.ros2.camera import Ros2Camera, Ros2CameraConfig, capture_monotonic_ns

REPO = Path(__file__).resolve().parents[2]
TWIN_YAML = REPO / "hardware" / "cameras" / "ros2_twin.yaml"
NODE_START_S = 60.0
"""The camera node builds and renders its scene before publishing (seconds on a busy CI core)."""
STAMP_TOL_NS = 50_000_000
"""Capture stamp vs receipt on loopback: publish + transport take about 1 ms; 50 ms bounds a loaded CI."""
MISSING_TOPIC_TIMEOUT_S = 0.5
MOVED_MEAN_DIFF = 5.0
"""Mean |Δpixel| of the wrist view when joint1 turns 0.6 rad (measured: about 20)."""


def _pixels(value: int, h: int = 24, w: int = 32) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


@pytest.fixture(scope="module")
def camera_node():
    """`python -m robot_rl.twin.doubles.ros2_camera_node --task pick_cube` publishing /robot_rl_twin/*."""
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    proc = subprocess.Popen([sys.executable, "-m", "robot_rl.twin.doubles.ros2_camera_node", "--task", "pick_cube",
                             "--fps", "30"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out[-3000:]  # 134 would mean the executor thread was not joined


@pytest.fixture
def publisher():
    """A test node publishing on loopback: `make(msg_type, topic)` gives a publisher."""
    from robot_rl.ros2.node_thread import NodeThread
    from robot_rl.ros2.qos import sensor_qos

    link = NodeThread("robot_rl_test_publisher").start()
    yield lambda msg_type, topic: link.node.create_publisher(msg_type, topic, sensor_qos())
    link.close()


def _keep_publishing(pub, make_msg, stop: threading.Event, period_s: float = 0.03) -> threading.Thread:
    def loop() -> None:
        k = 0
        while not stop.is_set():
            pub.publish(make_msg(k))
            k += 1
            stop.wait(period_s)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def test_capture_stamp_conversion() -> None:
    wall, mono = 1_790_000_000_000_000_000, 12_345_000_000_000
    # A wall-clock stamp 3 ms old is 3 ms before now on the monotonic clock.
    assert capture_monotonic_ns(wall - 3_000_000, wall_now_ns=wall, monotonic_now_ns=mono) == mono - 3_000_000
    # A monotonic stamp (robot_rl's own nodes) is kept; an unstamped message gets the receive time.
    assert capture_monotonic_ns(mono - 5, wall_now_ns=wall, monotonic_now_ns=mono) == mono - 5
    assert capture_monotonic_ns(0, wall_now_ns=wall, monotonic_now_ns=mono) == mono


def test_twin_node_frames_have_the_size_and_monotonic_stamps(camera_node) -> None:
    cam = Ros2Camera(Ros2CameraConfig(name="front", topic="/robot_rl_twin/front/image_raw",
                                      output=ImageTransform(64, 96, crop_xywh=(0, 16, 128, 96)),
                                      first_frame_timeout_s=NODE_START_S))
    cam.start()
    try:
        frame = cam.latest()
        for _ in range(5):
            frame = cam.wait_next(frame.seq)
            assert frame.image.shape == (64, 96, 3) and frame.image.dtype == np.uint8
            assert frame.image.std() > 5.0  # a rendered scene, not a blank image
            # The node stamps with the wall clock; the driver moves it onto the monotonic clock.
            assert abs(frame.t_receive_ns - frame.t_capture_ns) < STAMP_TOL_NS
        assert cam.source_size == (128, 128)
    finally:
        cam.stop()


def test_newest_frame_wins(publisher) -> None:
    from sensor_msgs.msg import Image

    from robot_rl.ros2.messages import image_msg

    pub = publisher(Image, "/test_newest/image_raw")
    stop = threading.Event()
    _keep_publishing(pub, lambda k: image_msg(time.monotonic_ns(), "cam", _pixels(0)), stop)
    cam = Ros2Camera(Ros2CameraConfig(name="c", topic="/test_newest/image_raw", output=ImageTransform(24, 32),
                                      first_frame_timeout_s=10.0))
    try:
        cam.start()
        stop.set()
        time.sleep(0.2)
        stamps = [time.monotonic_ns() - 1_000_000 * (10 - i) for i in range(10)]
        for i, t_ns in enumerate(stamps):  # a burst: only the last one should be kept
            pub.publish(image_msg(t_ns, "cam", _pixels(10 + i)))
        deadline = time.monotonic() + 5.0
        while (cam.latest().image[0, 0, 0] != 19) and time.monotonic() < deadline:
            time.sleep(0.01)
        frame = cam.latest()
        assert frame.image[0, 0, 0] == 19
        assert frame.t_capture_ns == stamps[-1]  # a monotonic stamp is kept as it is
        time.sleep(0.2)
        assert cam.latest() is frame  # nothing older arrives after it
    finally:
        stop.set()
        cam.stop()


def test_bad_images_are_dropped(publisher, caplog) -> None:
    from sensor_msgs.msg import Image

    from robot_rl.ros2.messages import image_msg

    pub = publisher(Image, "/test_bad/image_raw")

    def make(k: int) -> Image:
        msg = image_msg(time.time_ns(), "cam", _pixels(k % 200))
        if k % 3 == 1:
            msg.encoding = "16UC1"  # depth: not a colour image
        elif k % 3 == 2:
            msg.height = 30  # data no longer matches height × step
        return msg

    stop = threading.Event()
    _keep_publishing(pub, make, stop, period_s=0.01)
    cam = Ros2Camera(Ros2CameraConfig(name="c", topic="/test_bad/image_raw", output=ImageTransform(24, 32),
                                      first_frame_timeout_s=10.0))
    try:
        with caplog.at_level(logging.WARNING, logger="robot_rl.ros2.camera"):
            cam.start()
            time.sleep(1.5)
        seen = cam.latest().seq
        assert cam.dropped >= max(2, seen // 2)  # two bad messages were sent for each good one
        assert cam.wait_next(seen).image.shape == (24, 32, 3)  # still running
        warnings = [r for r in caplog.records if "dropped a message" in r.getMessage()]
        assert 1 <= len(warnings) <= 3  # at most one a second, not one per message
        assert "16UC1" in caplog.text or "expected" in caplog.text
    finally:
        stop.set()
        cam.stop()


def test_compressed_image(publisher) -> None:
    from sensor_msgs.msg import CompressedImage

    from robot_rl.ros2.messages import header

    y, x = np.mgrid[0:96, 0:128]
    rgb = np.stack([x * 2, y * 2, np.full_like(x, 128)], axis=2).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    pub = publisher(CompressedImage, "/test_jpeg/image_raw/compressed")
    stop = threading.Event()
    _keep_publishing(pub, lambda k: CompressedImage(header=header(time.time_ns(), "cam"), format="jpeg",
                                                    data=jpeg.tobytes()), stop)
    cam = Ros2Camera(Ros2CameraConfig(name="c", topic="/test_jpeg/image_raw/compressed", compressed=True,
                                      output=ImageTransform(48, 64), first_frame_timeout_s=10.0))
    try:
        cam.start()
        frame = cam.latest()
        expected = cv2.resize(rgb, (64, 48), interpolation=cv2.INTER_AREA)
        assert np.abs(frame.image.astype(int) - expected).mean() < 3.0
        assert abs(frame.t_receive_ns - frame.t_capture_ns) < STAMP_TOL_NS
    finally:
        stop.set()
        cam.stop()


def test_missing_topic_fails_fast() -> None:
    cam = Ros2Camera(Ros2CameraConfig(name="ghost", topic="/nobody/publishes/this",
                                      first_frame_timeout_s=MISSING_TOPIC_TIMEOUT_S))
    t0 = time.monotonic()
    with pytest.raises(DeviceNotFound, match=r"/nobody/publishes/this.*ros2 topic hz /nobody/publishes/this"):
        cam.start()
    assert time.monotonic() - t0 < MISSING_TOPIC_TIMEOUT_S + 3.0
    cam.stop()  # idempotent after a failed start


def test_sim_state_topic_moves_the_rendered_arm(camera_node, publisher) -> None:
    import mujoco
    from std_msgs.msg import Float64MultiArray

    from robot_rl.task_spec import load_task
    from robot_rl.twin import scene as sc
    from robot_rl.twin.backend import scene_source
    from robot_rl.twin.doubles.ros2_camera_node import initial_sim_state

    state = initial_sim_state("pick_cube", 0)
    model = sc.build_model(scene_source(load_task("pick_cube")))
    state[model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "joint1")]] += 0.6
    cam = Ros2Camera(Ros2CameraConfig(name="wrist", topic="/robot_rl_twin/wrist/image_raw",
                                      first_frame_timeout_s=NODE_START_S))
    pub = publisher(Float64MultiArray, "/robot_rl_twin/sim_state")
    stop = threading.Event()
    cam.start()
    try:
        before = cam.latest().image.astype(int)
        _keep_publishing(pub, lambda k: Float64MultiArray(data=[1.0, 2.0]), stop)  # wrong size: ignored
        time.sleep(0.5)
        assert np.array_equal(cam.wait_next(cam.latest().seq).image, before)
        stop.set()
        stop = threading.Event()
        _keep_publishing(pub, lambda k: Float64MultiArray(data=state.tolist()), stop)
        deadline = time.monotonic() + 10.0
        while np.abs(cam.latest().image.astype(int) - before).mean() < MOVED_MEAN_DIFF and time.monotonic() < deadline:
            time.sleep(0.05)
        assert np.abs(cam.latest().image.astype(int) - before).mean() >= MOVED_MEAN_DIFF  # the view turned
    finally:
        stop.set()
        cam.stop()


def test_serve_streams_ros2_cameras(camera_node, serve_process) -> None:
    configs = load_camera_configs(TWIN_YAML)
    assert [c.name for c in configs] == ["wrist", "front"]
    server = serve_process("--backend", "twin", "--task", "pick_cube", "--cameras", str(TWIN_YAML))
    direct = build_cameras([c for c in configs if c.name == "front"])[0]
    direct.start()
    try:
        with server.client(take_control=True) as client:
            client.reset(seed=0)
            obs = client.step(np.zeros(6), hold_s=0.05, cameras=("wrist", "front"))
            frames = {f.camera: f for f in obs.frames}
            assert set(frames) == {"wrist", "front"}
            for f in frames.values():
                assert f.image.shape == (128, 128, 3) and f.image.std() > 5.0
                assert abs(f.t_receive_ns - f.t_capture_ns) < STAMP_TOL_NS
            # The static scene renders the same image every time: served pixels are the topic's.
            np.testing.assert_array_equal(frames["front"].image, direct.latest().image)
        os.killpg(server.proc.pid, signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0, server.output()[-3000:]
    finally:
        direct.stop()


def test_ros2_entries_in_a_camera_config() -> None:
    from robot_rl.drivers.camera_config import camera_configs_from_dict
    from robot_rl.errors import ConfigError

    entry = {"driver": "ros2", "name": "front", "topic": "/cam/image_raw", "compressed": True,
             "output": {"height": 64, "width": 64, "crop_xywh": [0, 0, 480, 480]}}
    (cfg,) = camera_configs_from_dict({"cameras": [entry]})
    assert isinstance(cfg, Ros2CameraConfig) and cfg.compressed and cfg.output.crop_xywh == (0, 0, 480, 480)
    with pytest.raises(ConfigError, match="same topic"):
        camera_configs_from_dict({"cameras": [entry, {**entry, "name": "wrist"}]})
    with pytest.raises(ConfigError, match=r"cameras\[0\] \(front\).*topic must be an absolute"):
        camera_configs_from_dict({"cameras": [{**entry, "topic": "cam/image_raw"}]})
