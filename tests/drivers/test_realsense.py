"""RealSenseCamera against an `rs.software_device` fed synthetic rgb8 frames, and against a real
`rs.context()` (no camera is connected in CI)."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from robot_rl.drivers.camera import ImageTransform
from robot_rl.drivers.realsense import (
    RealSenseCamera,
    RealSenseConfig,
    global_time_ms_to_monotonic_ns,
    list_realsense_serials,
)
from robot_rl.errors import ConfigError, DependencyMissing, DeviceNotFound

try:
    import pyrealsense2 as rs
except ImportError as exc:  # only the tests that stream are skipped; config and clock tests still run
    rs = None
    RS_MISSING = f"pyrealsense2 cannot be imported ({exc}): pip install pyrealsense2 (needs libusb-1.0-0)"
else:
    RS_MISSING = ""
needs_rs = pytest.mark.skipif(rs is None, reason=RS_MISSING)

SERIAL = "900000000001"
W, H, FPS = 64, 48, 30
WAIT_S = 2.0
NEAR_NOW_NS = 500_000_000
"""Stamps must lie within this of the time the test saw the frame."""
AGE_ATOL_NS = 5_000_000
"""Tolerance on a recovered frame age: covers the time between push and dequeue on a slow CI box."""


class SyntheticRealSense:
    """A software RealSense with one rgb8 colour stream that the test feeds frame by frame."""

    def __init__(self, serial: str = SERIAL, *, width: int = W, height: int = H, fps: int = FPS) -> None:
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.serial_number, serial)
        self.device.register_info(rs.camera_info.name, "Synthetic RealSense")
        self.sensor = self.device.add_sensor("RGB Camera")
        for option, lo, hi, default in ((rs.option.enable_auto_exposure, 0, 1, 1), (rs.option.exposure, 1, 10000, 156)):
            # pyrealsense2 2.59's option_range(min, max, step, default) swaps step and default: set attributes.
            r = rs.option_range()
            r.min, r.max, r.step, r.default = lo, hi, 1, default
            self.sensor.add_option(option, r, True)
        stream = rs.video_stream()
        stream.type, stream.index, stream.uid = rs.stream.color, 0, 0
        stream.width, stream.height, stream.fps, stream.bpp, stream.fmt = width, height, fps, 3, rs.format.rgb8
        self.profile = self.sensor.add_video_stream(stream).as_video_stream_profile()
        self.width, self.height = width, height
        self.n = 0

    def query_devices(self) -> list:
        # `software_device.add_to(rs.context())` does not list the device in 2.59, so the test
        # stands in for the context: the driver only calls query_devices().
        return [self.device]

    def push(self, rgb: np.ndarray, *, timestamp_ms: float | None = None,
             domain: object = None) -> None:
        """Inject one (H, W, 3) uint8 RGB frame; default stamp: global time now."""
        self.n += 1
        f = rs.software_video_frame()
        f.pixels = np.ascontiguousarray(rgb, dtype=np.uint8)
        f.bpp, f.stride = 3, 3 * self.width
        f.timestamp = time.time_ns() / 1e6 if timestamp_ms is None else timestamp_ms
        f.domain = rs.timestamp_domain.global_time if domain is None else domain
        f.frame_number = self.n
        f.profile = self.profile
        self.sensor.on_video_frame(f)


def wait_for(camera: RealSenseCamera, predicate, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        frame = camera.latest()
        if frame is not None and predicate(frame):
            return frame
        time.sleep(0.002)
    raise AssertionError(f"no frame matching the condition within {timeout_s} s; last {camera.latest()}")


def quadrants(height: int = H, width: int = W) -> np.ndarray:
    """RGB image: top-left red, top-right green, bottom-left blue, bottom-right white."""
    img = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    img[:h, :w] = (255, 0, 0)
    img[:h, w:] = (0, 255, 0)
    img[h:, :w] = (0, 0, 255)
    img[h:, w:] = (255, 255, 255)
    return img


def config(**kw) -> RealSenseConfig:
    base = dict(name="wrist", serial=SERIAL, width=W, height=H, fps=FPS, output=ImageTransform(height=16, width=16))
    return RealSenseConfig(**(base | kw))


@pytest.fixture
def synthetic():
    return SyntheticRealSense()


@pytest.fixture
def camera_factory():
    started = []

    def make(cfg: RealSenseConfig, ctx) -> RealSenseCamera:
        cam = RealSenseCamera(cfg, context=ctx)
        cam.start()
        started.append(cam)
        return cam

    yield make
    for cam in started:
        cam.stop()


@needs_rs
def test_pixels_arrive_in_rgb_order_with_crop_then_resize(synthetic, camera_factory):
    # Crop the top-right (green) quadrant, then resize it from 32x24 to 16x16.
    cam = camera_factory(config(output=ImageTransform(height=16, width=16, crop_xywh=(W // 2, 0, W // 2, H // 2))),
                         synthetic)
    synthetic.push(quadrants())
    frame = wait_for(cam, lambda f: True)
    assert frame.image.shape == (16, 16, 3) and frame.image.dtype == np.uint8
    np.testing.assert_array_equal(frame.image, np.broadcast_to(np.array([0, 255, 0], np.uint8), (16, 16, 3)))


@needs_rs
def test_full_frame_keeps_rgb_channels(synthetic, camera_factory):
    cam = camera_factory(config(output=ImageTransform(height=H, width=W)), synthetic)
    img = quadrants()
    synthetic.push(img)
    frame = wait_for(cam, lambda f: True)
    np.testing.assert_array_equal(frame.image, img)
    assert tuple(frame.image[0, 0]) == (255, 0, 0), "red must stay in channel 0 (RGB, not BGR)"


@needs_rs
def test_newest_frame_wins_and_seq_increases(synthetic, camera_factory):
    cam = camera_factory(config(), synthetic)
    seqs = []
    synthetic.push(np.full((H, W, 3), 1, np.uint8))
    seqs.append(wait_for(cam, lambda f: True).seq)
    # A burst faster than the driver loop: the queue (capacity 1) keeps the newest.
    for value in range(2, 12):
        synthetic.push(np.full((H, W, 3), value, np.uint8))
    frame = wait_for(cam, lambda f: f.image[0, 0, 0] == 11)
    seqs.append(frame.seq)
    time.sleep(0.1)  # nothing newer must replace it
    assert cam.latest().image[0, 0, 0] == 11
    for value in (20, 21):
        synthetic.push(np.full((H, W, 3), value, np.uint8))
        seqs.append(wait_for(cam, lambda f, v=value: f.image[0, 0, 0] == v).seq)
    assert all(b > a for a, b in zip(seqs, seqs[1:])), seqs


@needs_rs
@pytest.mark.parametrize("capacity", [1, 2])
def test_a_grab_after_a_backlog_returns_the_newest(synthetic, capacity):
    # Drive _open/_grab by hand so that five frames are waiting before the first grab.
    cam = RealSenseCamera(config(frame_queue_capacity=capacity), context=synthetic)
    cam._open()
    try:
        for value in range(1, 6):
            synthetic.push(np.full((H, W, 3), value, np.uint8))
        time.sleep(0.1)  # librealsense hands frames to the queue on its own thread
        image, _ = cam._grab()
        assert image[0, 0, 0] == 5
        synthetic.push(np.full((H, W, 3), 6, np.uint8))
        image, _ = cam._grab()
        assert image[0, 0, 0] == 6
    finally:
        cam._close()


@needs_rs
def test_global_time_becomes_monotonic_capture_time(synthetic, camera_factory):
    cam = camera_factory(config(), synthetic)
    age_ms = 30.0
    pushed_mono_ns, pushed_wall_ns = time.monotonic_ns(), time.time_ns()
    synthetic.push(np.full((H, W, 3), 5, np.uint8), timestamp_ms=pushed_wall_ns / 1e6 - age_ms)
    frame = wait_for(cam, lambda f: True)
    now_ns = time.monotonic_ns()
    assert cam.timestamp_domain == "global_time"
    assert frame.t_capture_ns <= frame.t_receive_ns <= now_ns
    assert now_ns - frame.t_capture_ns < NEAR_NOW_NS
    # Against the push, not the receipt: how late the driver's thread got the frame does not matter.
    assert abs(frame.t_capture_ns - (pushed_mono_ns - age_ms * 1e6)) < AGE_ATOL_NS


@needs_rs
def test_other_domains_fall_back_to_receive_time(synthetic, camera_factory):
    cam = camera_factory(config(), synthetic)
    synthetic.push(np.full((H, W, 3), 9, np.uint8), timestamp_ms=12345.0, domain=rs.timestamp_domain.hardware_clock)
    frame = wait_for(cam, lambda f: True)
    assert cam.timestamp_domain == "hardware_clock"
    assert 0 <= frame.t_receive_ns - frame.t_capture_ns < AGE_ATOL_NS
    assert time.monotonic_ns() - frame.t_capture_ns < NEAR_NOW_NS


@needs_rs
def test_exposure_options_reach_the_sensor(synthetic, camera_factory):
    camera_factory(config(auto_exposure=False, exposure_100us=300), synthetic)
    assert synthetic.sensor.get_option(rs.option.enable_auto_exposure) == 0
    assert synthetic.sensor.get_option(rs.option.exposure) == 300


@needs_rs
def test_unsupported_mode_names_the_offered_modes(synthetic):
    cam = RealSenseCamera(config(width=640, height=480), context=synthetic)
    with pytest.raises(ConfigError, match=r"640x480@30.*offers: 64x48@30"):
        cam.start()


@needs_rs
def test_wrong_serial_lists_connected_serials(synthetic):
    cam = RealSenseCamera(config(serial="123"), context=synthetic)
    with pytest.raises(DeviceNotFound, match=rf"'123'.*{SERIAL}"):
        cam.start()
    assert list_realsense_serials(context=synthetic) == [SERIAL]


@needs_rs
def test_missing_camera_raises_fast_with_real_context():
    if list_realsense_serials():
        pytest.skip("a RealSense is connected to this machine")
    cam = RealSenseCamera(config(serial="000000000000"))
    t0 = time.monotonic()
    with pytest.raises(DeviceNotFound, match="000000000000.*connected serials: none"):
        cam.start()
    assert time.monotonic() - t0 < 1.0


@needs_rs
def test_stop_ends_the_capture_thread(synthetic):
    cam = RealSenseCamera(config(), context=synthetic)
    cam.start()
    synthetic.push(np.zeros((H, W, 3), np.uint8))
    wait_for(cam, lambda f: True)
    t0 = time.monotonic()
    cam.stop()
    assert not cam._thread.is_alive() and time.monotonic() - t0 < 1.0
    assert cam.error is None


@pytest.mark.parametrize("age_ms, expected_age_ns", [(0.0, 0), (33.3, 33_300_000), (-2.0, 0)])
def test_global_time_conversion(age_ms, expected_age_ns):
    wall_now_ns, mono_now_ns = 1_700_000_000_123_456_789, 5_000_000_000
    t_global_ms = wall_now_ns / 1e6 - age_ms
    t = global_time_ms_to_monotonic_ns(t_global_ms, wall_now_ns=wall_now_ns, monotonic_now_ns=mono_now_ns)
    assert abs((mono_now_ns - t) - expected_age_ns) < 1_000  # float64 ms since 1970 resolve ~0.25 µs


@pytest.mark.parametrize("age_ms", [5_000.0, -5_000.0])
def test_implausible_global_time_is_rejected(age_ms):
    wall_now_ns = 1_700_000_000_000_000_000
    assert global_time_ms_to_monotonic_ns(wall_now_ns / 1e6 - age_ms, wall_now_ns=wall_now_ns,
                                          monotonic_now_ns=1) is None


@pytest.mark.parametrize("kw, field", [
    (dict(serial=" 12"), "serial"),
    (dict(fps=0), "fps"),
    (dict(exposure_100us=100), "auto_exposure"),
    (dict(auto_exposure=False, exposure_100us=0), "exposure_100us"),
    (dict(frame_queue_capacity=3), "frame_queue_capacity"),
    (dict(output=ImageTransform(height=16, width=16, crop_xywh=(0, 0, W + 1, H))), "crop_xywh"),
])
def test_config_errors_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=field):
        config(**kw)


@needs_rs
@pytest.mark.hardware
def test_first_connected_realsense_streams():
    serials = list_realsense_serials()
    if not serials:
        pytest.skip("no RealSense connected")
    cam = RealSenseCamera(RealSenseConfig(name="hw", serial=serials[0]))
    cam.start()
    try:
        frame = cam.wait_first(timeout_s=5.0)
        assert frame.image.shape == (128, 128, 3)
        assert frame.t_capture_ns <= frame.t_receive_ns
    finally:
        cam.stop()


def test_missing_pyrealsense2_raises_dependency_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyrealsense2", None)  # makes `import pyrealsense2` raise ImportError
    with pytest.raises(DependencyMissing, match="pip install pyrealsense2"):
        RealSenseCamera(config()).start()
    with pytest.raises(DependencyMissing, match="pip install pyrealsense2"):
        list_realsense_serials()


def test_drivers_import_without_pyrealsense2():
    code = ("import sys; sys.modules['pyrealsense2'] = None; "
            "import robot_rl.drivers.realsense, robot_rl.drivers.camera_config; "
            "from robot_rl.drivers.camera_config import build_cameras; "
            "from robot_rl.drivers.realsense import RealSenseConfig; "
            "build_cameras([RealSenseConfig(name='w', serial='1')])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
