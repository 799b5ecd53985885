"""OpenCVCamera on real video files written with cv2.VideoWriter (no webcam in CI), and on missing devices."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from robot_rl.drivers.camera import ImageTransform
from robot_rl.drivers.opencv_camera import OpenCVCamera, OpenCVCameraConfig
from robot_rl.errors import ConfigError, DeviceNotFound

W, H = 160, 120
COLOUR_ATOL = 12
"""MJPG is lossy: solid blocks come back within a few levels, far from any other colour used here."""
MISSING_INDEX = 63
"""/dev/video63: no such device on a CI box (checked below)."""

RGB_BLOCKS = {
    "red": ((0, 0), (255, 0, 0)),
    "green": ((W // 2, 0), (0, 255, 0)),
    "blue": ((0, H // 2), (0, 0, 255)),
    "yellow": ((W // 2, H // 2), (255, 255, 0)),
}
"""Quadrant name -> ((x, y) of its top-left corner, RGB colour)."""


def write_video(path: Path, frames_rgb: list[np.ndarray], fps: float = 30.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    assert writer.isOpened(), "this OpenCV build cannot write MJPG .avi"
    for rgb in frames_rgb:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))  # VideoWriter takes BGR, like every cv2 API
    writer.release()
    return path


def quadrant_image() -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    for (x, y), rgb in RGB_BLOCKS.values():
        img[y:y + H // 2, x:x + W // 2] = rgb
    return img


@pytest.fixture
def quadrant_video(tmp_path) -> Path:
    return write_video(tmp_path / "quadrants.avi", [quadrant_image()] * 10)


@pytest.fixture
def started():
    cams = []

    def start(cfg: OpenCVCameraConfig) -> OpenCVCamera:
        cam = OpenCVCamera(cfg)
        cam.start()
        cams.append(cam)
        return cam

    yield start
    for cam in cams:
        cam.stop()


@pytest.mark.parametrize("quadrant", sorted(RGB_BLOCKS))
def test_crop_selects_the_quadrant_in_rgb_order(quadrant_video, started, quadrant):
    (x, y), rgb = RGB_BLOCKS[quadrant]
    # Crop inside the block (margin 8 px: MJPG blurs edges), then resize to 16x16.
    crop = (x + 8, y + 8, W // 2 - 16, H // 2 - 16)
    cam = started(OpenCVCameraConfig(name="side", source=str(quadrant_video),
                                     output=ImageTransform(height=16, width=16, crop_xywh=crop)))
    frame = cam.wait_first(timeout_s=2.0)
    assert frame.image.shape == (16, 16, 3) and frame.image.dtype == np.uint8
    assert np.abs(frame.image.astype(int) - np.array(rgb)).max() <= COLOUR_ATOL, frame.image[0, 0]


def test_file_frames_keep_arriving_with_increasing_seq_and_sane_stamps(quadrant_video, started):
    cam = started(OpenCVCameraConfig(name="side", source=str(quadrant_video), fps=100.0,
                                     output=ImageTransform(height=60, width=80)))
    first = cam.wait_first(timeout_s=2.0)
    assert cam.capture_size == (H, W)
    # 10 frames at 100 fps: 0.3 s covers about three passes through the file, so it must loop.
    time.sleep(0.3)
    last = cam.latest()
    now_ns = time.monotonic_ns()
    assert last.seq > first.seq + 15, (first.seq, last.seq)
    assert cam.error is None
    assert last.t_capture_ns <= last.t_receive_ns <= now_ns and now_ns - last.t_capture_ns < 200_000_000
    assert last.image.shape == (60, 80, 3)
    # Whole-frame resize keeps the layout: top-left quadrant red, bottom-right yellow.
    assert np.abs(last.image[5, 5].astype(int) - (255, 0, 0)).max() <= COLOUR_ATOL
    assert np.abs(last.image[-5, -5].astype(int) - (255, 255, 0)).max() <= COLOUR_ATOL


def test_file_is_paced_at_fps(quadrant_video, started):
    cam = started(OpenCVCameraConfig(name="side", source=str(quadrant_video), fps=20.0,
                                     output=ImageTransform(height=16, width=16)))
    first = cam.wait_first(timeout_s=2.0)
    time.sleep(0.5)
    frames = cam.latest().seq - first.seq
    assert 5 <= frames <= 12, f"expected ~10 frames in 0.5 s at 20 fps, got {frames}"


def test_missing_index_raises_device_not_found_fast():
    if Path(f"/dev/video{MISSING_INDEX}").exists():
        pytest.skip(f"/dev/video{MISSING_INDEX} exists here")
    cam = OpenCVCamera(OpenCVCameraConfig(name="side", source=MISSING_INDEX))
    t0 = time.monotonic()
    with pytest.raises(DeviceNotFound, match="side"):
        cam.start()
    assert time.monotonic() - t0 < 1.0


def test_missing_path_raises_device_not_found(tmp_path):
    cam = OpenCVCamera(OpenCVCameraConfig(name="side", source=str(tmp_path / "no-such-camera")))
    with pytest.raises(DeviceNotFound, match="does not exist"):
        cam.start()


def test_unreadable_file_raises_device_not_found(tmp_path):
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(DeviceNotFound, match="junk.avi"):
        OpenCVCamera(OpenCVCameraConfig(name="side", source=str(junk))).start()


def test_crop_larger_than_the_source_is_a_config_error(quadrant_video):
    cfg = OpenCVCameraConfig(name="side", source=str(quadrant_video),
                             output=ImageTransform(height=16, width=16, crop_xywh=(0, 0, W + 1, H)))
    with pytest.raises(ConfigError, match="crop_xywh"):
        OpenCVCamera(cfg).start()


@pytest.mark.parametrize("kw, field", [
    (dict(source=-1), "source"),
    (dict(source=""), "source"),
    (dict(fps=0.0), "fps"),
    (dict(width=0), "width"),
    (dict(fourcc="MJPEG"), "fourcc"),
    (dict(open_timeout_s=0.0), "open_timeout_s"),
])
def test_config_errors_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=field):
        OpenCVCameraConfig(**(dict(name="side", source=0) | kw))
