"""Camera config YAML -> typed configs -> drivers, including the shipped example file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from robot_rl.drivers.camera import ImageTransform, LiveCameras
from robot_rl.drivers.camera_config import (
    build_cameras,
    camera_configs_from_dict,
    load_camera_configs,
)
from robot_rl.drivers.opencv_camera import OpenCVCamera, OpenCVCameraConfig
from robot_rl.drivers.realsense import RealSenseCamera, RealSenseConfig
from robot_rl.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "hardware" / "cameras" / "example.yaml"


def entry(**kw) -> dict:
    return {"driver": "realsense", "name": "wrist", "serial": "012345678901"} | kw


def test_example_file_loads_two_realsense_cameras():
    configs = load_camera_configs(EXAMPLE)
    assert [type(c) for c in configs] == [RealSenseConfig, RealSenseConfig]
    assert [c.name for c in configs] == ["wrist", "front"]
    for c in configs:
        assert (c.width, c.height, c.fps) == (640, 480, 30)
        assert c.output == ImageTransform(height=128, width=128, crop_xywh=(80, 0, 480, 480))
        assert isinstance(c.serial, str) and len(c.serial) == 12


def test_example_commented_opencv_camera_is_valid_when_uncommented():
    lines = EXAMPLE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "# - driver: opencv")
    block = [line.replace("# ", "", 1) for line in lines[start:] if line.strip().startswith("#")]
    data = yaml.safe_load(EXAMPLE.read_text())
    data["cameras"] += yaml.safe_load("\n".join(block))
    configs = camera_configs_from_dict(data)
    side = configs[-1]
    assert isinstance(side, OpenCVCameraConfig) and side.fourcc == "MJPG" and side.source.startswith("/dev/v4l")


def test_entries_become_typed_configs_and_drivers(tmp_path):
    path = tmp_path / "cams.yaml"
    path.write_text(yaml.safe_dump({"cameras": [
        entry(output={"height": 64, "width": 64, "crop_xywh": [80, 0, 480, 480]}, auto_exposure=False,
              exposure_100us=200),
        {"driver": "opencv", "name": "side", "source": 0, "width": None, "fps": 15},
        {"driver": "opencv", "name": "file", "source": "/data/replay.avi"},
    ]}))
    wrist, side, file_cam = load_camera_configs(path)
    assert wrist == RealSenseConfig(name="wrist", serial="012345678901",
                                    output=ImageTransform(height=64, width=64, crop_xywh=(80, 0, 480, 480)),
                                    auto_exposure=False, exposure_100us=200)
    assert side == OpenCVCameraConfig(name="side", source=0, width=None, fps=15.0)
    assert file_cam.source == "/data/replay.avi"
    drivers = build_cameras([wrist, side, file_cam])
    assert [type(d) for d in drivers] == [RealSenseCamera, OpenCVCamera, OpenCVCamera]
    assert [(d.name, d.height, d.width) for d in drivers] == [("wrist", 64, 64), ("side", 128, 128),
                                                              ("file", 128, 128)]


@pytest.mark.parametrize("cameras, message", [
    ([entry(driver="kinect")], r"cameras\[0\] \(wrist\)\.driver must be one of \['opencv', 'realsense', 'ros2'\]"),
    ([{"name": "wrist", "serial": "1"}], r"cameras\[0\] \(wrist\)\.driver"),
    ([entry(serial=12345)], r"cameras\[0\] \(wrist\)\.serial must be a quoted string"),
    ([entry(fps="thirty")], r"cameras\[0\] \(wrist\)\.fps: expected an integer"),
    ([entry(exposure=100)], r"cameras\[0\] \(wrist\): unknown key\(s\) \['exposure'\]"),
    ([entry(output={"height": 4, "width": 128})], r"cameras\[0\] \(wrist\): output size 4x128"),
    ([entry(output={"height": 64, "width": 64, "crop_xywh": [0, 0, 700, 480]})], r"cameras\[0\].*crop_xywh"),
    ([entry(output={"height": 64, "width": 64, "crop_xywh": [0, 0, 64]})], r"output\.crop_xywh: expected 4 values"),
    ([entry(), entry(name="front")], r"same serial '012345678901'"),
    ([entry(), entry(serial="2")], r"same name 'wrist'"),
    ([{"driver": "opencv", "name": "a", "source": 0}, {"driver": "opencv", "name": "b", "source": 0}],
     r"same source 0"),
    ([{"driver": "opencv", "name": "a"}], r"cameras\[0\] \(a\): missing required field\(s\) \[.source.\]"),
    ("wrist", r"cameras must be a list"),
])
def test_errors_name_the_entry_and_field(cameras, message):
    with pytest.raises(ConfigError, match=message):
        camera_configs_from_dict({"cameras": cameras})


def test_top_level_must_be_a_cameras_list():
    with pytest.raises(ConfigError, match="top-level key 'cameras'"):
        camera_configs_from_dict([entry()])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_camera_configs(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_camera_configs(bad)


def test_built_opencv_driver_serves_frames_through_live_cameras(tmp_path):
    video = tmp_path / "front.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    for _ in range(5):
        writer.write(np.full((48, 64, 3), (255, 0, 0), np.uint8))  # BGR blue
    writer.release()
    configs = camera_configs_from_dict({"cameras": [
        {"driver": "opencv", "name": "front", "source": str(video), "output": {"height": 24, "width": 32}}]})
    source = LiveCameras(build_cameras(configs), first_frame_timeout_s=2.0)
    try:
        assert source.camera_sizes() == {"front": (24, 32)}
        (frame,) = source.frames(("front",), None, 0)
        assert frame.image.shape == (24, 32, 3)
        assert frame.image[..., 2].min() > 230 and frame.image[..., :2].max() < 25  # blue in RGB
    finally:
        source.close()
