"""Intel RealSense colour cameras on the robot PC, opened by serial through pyrealsense2's sensor API.

pyrealsense2 is imported inside functions, so robot_rl imports without it; using a RealSense camera
without it raises `DependencyMissing`.

Why the sensor API and not `rs.pipeline`: `pipeline.start()` with no matching camera blocks about
15 s before it raises (NOTES.md, Devices). Here the serial is looked up in `context.query_devices()`
first (about 1 ms), the colour sensor is opened with one rgb8 profile, and it streams into a
`rs.frame_queue` of capacity 1–2 that drops the oldest frame when full. The same code then drives a
real camera and an `rs.software_device` (how the tests inject synthetic frames).

Clocks: RealSense "global time" stamps are milliseconds on the host's `std::chrono::system_clock`
(librealsense's `time_service::get_time()`; wall time since the Unix epoch), mapped from the
camera's hardware clock by a running regression. `global_time_ms_to_monotonic_ns` turns them into
the robot PC's `time.monotonic_ns()` clock that every robot_rl stamp uses.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_rl.drivers.camera import ImageTransform, ThreadedCamera
from robot_rl.errors import ConfigError, DependencyMissing, DeviceNotFound

log = logging.getLogger(__name__)

PIP_INSTALL = "pip install pyrealsense2"

_POLL_MS = 50
"""How long one wait on the frame queue lasts, so `stop()` is noticed within about this time."""
MAX_FRAME_AGE_NS = 1_000_000_000
"""A global-time stamp older than this (or a wall-clock step) is not trusted: receive time is used."""


def import_pyrealsense2() -> Any:
    """The `pyrealsense2` module.

    Raises:
        DependencyMissing: it is not installed, or its shared library (libusb) is missing.
    """
    try:
        import pyrealsense2 as rs
    except ImportError as exc:
        raise DependencyMissing(
            f"RealSense cameras need pyrealsense2, which failed to import ({exc}): run `{PIP_INSTALL}` "
            "(or `pip install robot_rl[realsense]`); on Debian/Ubuntu it also needs "
            "`apt-get install libusb-1.0-0`") from exc
    return rs


@dataclass(frozen=True)
class RealSenseConfig:
    """One RealSense colour camera, found by serial; images are cropped and resized on the robot PC."""

    name: str
    """Camera name the task and the wire use, e.g. "wrist"."""
    serial: str
    """Serial number printed on the camera (`rs-enumerate-devices`); quote it in YAML."""
    output: ImageTransform = field(default_factory=lambda: ImageTransform(height=128, width=128))
    """Crop (in colour-stream pixels) then resize applied to every frame."""
    width: int = 640
    """Colour stream width [px] requested from the camera."""
    height: int = 480
    """Colour stream height [px]."""
    fps: int = 30
    """Colour stream rate [frames/s]; the camera only offers a few (6, 15, 30, 60 on D400)."""
    auto_exposure: bool | None = None
    """Colour auto-exposure on/off; None leaves the camera's setting (on after power-up)."""
    exposure_100us: int | None = None
    """Manual colour exposure in units of 100 µs (D400 RGB firmware granularity, 1..10000;
    156 = 15.6 ms). Needs `auto_exposure: false`. None leaves it."""
    frame_queue_capacity: int = 1
    """Frames librealsense may hold for us (1–2): more only adds latency, the oldest is dropped."""
    frame_timeout_s: float = 5.0
    """No frame for this long stops the driver with an error (cable, USB bandwidth, power)."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("RealSenseConfig.name must be a non-empty camera name")
        if not isinstance(self.serial, str) or not self.serial.strip() or self.serial != self.serial.strip():
            raise ConfigError(f"serial must be a non-empty string without surrounding spaces, got {self.serial!r}; "
                              "quote it in YAML (serial: \"123456789012\")")
        if not (1 <= self.width <= 4096 and 1 <= self.height <= 4096):
            raise ConfigError(f"width and height must be in 1..4096, got width={self.width} height={self.height}")
        if not 1 <= self.fps <= 300:
            raise ConfigError(f"fps must be in 1..300, got {self.fps}")
        crop = self.output.crop_xywh
        if crop is not None and (crop[0] + crop[2] > self.width or crop[1] + crop[3] > self.height):
            raise ConfigError(f"output.crop_xywh {list(crop)} exceeds the {self.width}x{self.height} colour stream")
        if self.exposure_100us is not None:
            if not 1 <= self.exposure_100us <= 10000:
                raise ConfigError(f"exposure_100us must be in 1..10000 (0.1–1000 ms), got {self.exposure_100us}")
            if self.auto_exposure is not False:
                raise ConfigError(f"exposure_100us={self.exposure_100us} needs auto_exposure: false "
                                  "(auto-exposure would overwrite it)")
        if not 1 <= self.frame_queue_capacity <= 2:
            raise ConfigError(f"frame_queue_capacity must be 1 or 2 (newest frame, low latency), "
                              f"got {self.frame_queue_capacity}")
        if not self.frame_timeout_s > 0:
            raise ConfigError(f"frame_timeout_s must be > 0, got {self.frame_timeout_s}")


def global_time_ms_to_monotonic_ns(t_global_ms: float, *, wall_now_ns: int, monotonic_now_ns: int) -> int | None:
    """Robot-PC monotonic time [ns] of a frame stamped in RealSense global time.

    Global time is ms on the host's wall clock (`system_clock`, same epoch as `time.time_ns()`).
    The frame's age is measured on the wall clock, `wall_now_ns - t_global_ms·1e6`, and subtracted
    from a monotonic reading taken together with `wall_now_ns`. Only this difference crosses clocks,
    so a wall clock far from true time is harmless; a wall-clock step between capture and now is not
    (the age would be off by the step), hence the plausibility check. Float64 ms since the epoch
    resolve ~0.25 µs, well below a frame period.

    Args:
        t_global_ms: `frame.get_timestamp()` of a frame whose domain is `global_time`, ms.
        wall_now_ns: `time.time_ns()` read right after the frame was dequeued.
        monotonic_now_ns: `time.monotonic_ns()` read next to `wall_now_ns`.

    Returns:
        Capture time on the monotonic clock, never later than `monotonic_now_ns` (a stamp slightly in
        the future, from regression jitter, is clamped to now). None when the age is negative by more
        than `MAX_FRAME_AGE_NS` or above it: the stamp cannot be trusted and the caller should use
        receive time.
    """
    age_ns = wall_now_ns - round(t_global_ms * 1_000_000)
    if not -MAX_FRAME_AGE_NS <= age_ns <= MAX_FRAME_AGE_NS:
        return None
    return monotonic_now_ns - max(age_ns, 0)


def _serial_of(rs: Any, device: Any) -> str | None:
    if device.supports(rs.camera_info.serial_number):
        return device.get_info(rs.camera_info.serial_number)
    return None


def list_realsense_serials(*, context: Any | None = None) -> list[str]:
    """Serial numbers of the RealSense devices this machine sees now (about 1 ms; [] if none).

    Args:
        context: an `rs.context` (or any object with `query_devices()`); None creates one.

    Raises:
        DependencyMissing: pyrealsense2 is not installed.
    """
    rs = import_pyrealsense2()
    ctx = context if context is not None else rs.context()
    return [s for s in (_serial_of(rs, d) for d in ctx.query_devices()) if s is not None]


def find_device(context: Any, serial: str, *, camera: str = "") -> Any:
    """The device with `serial` in `context.query_devices()`, found without starting any stream.

    Raises:
        DeviceNotFound: no connected device has that serial; the message lists those that are connected.
    """
    rs = import_pyrealsense2()
    devices = list(context.query_devices())
    for device in devices:
        if _serial_of(rs, device) == serial:
            return device
    seen = [s for s in (_serial_of(rs, d) for d in devices) if s is not None]
    label = f"camera {camera!r}: " if camera else ""
    raise DeviceNotFound(
        f"{label}no RealSense with serial {serial!r} is connected; connected serials: {seen or 'none'}. "
        "Check the serial in the camera config, the USB 3 cable, `rs-enumerate-devices`, and the udev "
        "rule hardware/udev/99-realsense-libusb.rules.")


def _find_color_profile(rs: Any, device: Any, cfg: RealSenseConfig) -> tuple[Any, Any]:
    """(sensor, profile) of the rgb8 colour stream at cfg's size and rate, searching every sensor
    (the D405 streams colour from its stereo module, other models from an "RGB Camera" sensor)."""
    offered = set()
    for sensor in device.query_sensors():
        for profile in sensor.get_stream_profiles():
            if profile.stream_type() != rs.stream.color or not profile.is_video_stream_profile():
                continue
            video = profile.as_video_stream_profile()
            if profile.format() == rs.format.rgb8:
                offered.add((video.width(), video.height(), profile.fps()))
                if (video.width(), video.height(), profile.fps()) == (cfg.width, cfg.height, cfg.fps):
                    return sensor, profile
    modes = ", ".join(f"{w}x{h}@{f}" for w, h, f in sorted(offered)) or "none"
    raise ConfigError(f"camera {cfg.name!r} (serial {cfg.serial}): no rgb8 colour stream "
                      f"{cfg.width}x{cfg.height}@{cfg.fps}; this camera offers: {modes}. Set width, height "
                      "and fps to one of them.")


def _apply_options(rs: Any, sensor: Any, cfg: RealSenseConfig) -> None:
    # Global time is on by default on D400 but can be off in a saved preset; without it stamps
    # are in the camera's own clock and capture times fall back to receive time.
    if sensor.supports(rs.option.global_time_enabled):
        sensor.set_option(rs.option.global_time_enabled, 1.0)
    wanted = []
    if cfg.auto_exposure is not None:
        wanted.append(("auto_exposure", rs.option.enable_auto_exposure, 1.0 if cfg.auto_exposure else 0.0))
    if cfg.exposure_100us is not None:
        wanted.append(("exposure_100us", rs.option.exposure, float(cfg.exposure_100us)))
    for field_name, option, value in wanted:
        if not sensor.supports(option):
            raise ConfigError(f"camera {cfg.name!r} (serial {cfg.serial}): its colour sensor has no {option} "
                              f"option; remove {field_name} from its config")
        try:
            sensor.set_option(option, value)
        except RuntimeError as exc:
            r = sensor.get_option_range(option)
            raise ConfigError(f"camera {cfg.name!r}: {field_name}={value:g} refused by the camera ({exc}); "
                              f"its range is {r.min:g}..{r.max:g} step {r.step:g}") from exc


class _Stopped(Exception):
    """Raised inside the capture thread when `stop()` interrupts a wait (ends `_run` quietly)."""


class RealSenseCamera(ThreadedCamera):
    """A RealSense colour camera found by serial; newest frame, RGB, cropped and resized.

    Threading: the owner calls `start()` once (opens the sensor in the caller's thread, so a missing
    camera raises there), `latest()` from any thread, and `stop()` once. After `start()` the capture
    thread alone touches the sensor and queue; `stop()` is seen within `_POLL_MS` and that thread then
    stops and closes the sensor.

    Timestamps: `t_capture_ns` is the frame's global-time stamp mapped to the monotonic clock (see
    `global_time_ms_to_monotonic_ns`). When the frame's domain is not global time (hardware clock,
    or system time from a backend without metadata), or the stamp is implausible, `t_capture_ns` is
    the monotonic time the frame was dequeued, i.e. receive time, and a warning is logged once.
    `t_receive_ns` is set by `ThreadedCamera` after the frame is dequeued.

    Args:
        config: the camera's settings.
        context: object with `query_devices()` returning pyrealsense2 devices; None makes an
            `rs.context()` at `start()`. Tests pass one holding an `rs.software_device`.
    """

    def __init__(self, config: RealSenseConfig, *, context: Any | None = None) -> None:
        super().__init__(config.name, config.output)
        self.config = config
        self._context = context
        self._rs: Any = None
        self._sensor: Any = None
        self._queue: Any = None
        self._warned: set[str] = set()
        self.timestamp_domain: str | None = None
        """Domain name of the newest frame's stamp ("global_time" when capture times are exact)."""

    def _open(self) -> None:
        rs = self._rs = import_pyrealsense2()
        cfg = self.config
        ctx = self._context if self._context is not None else rs.context()
        device = find_device(ctx, cfg.serial, camera=cfg.name)
        sensor, profile = _find_color_profile(rs, device, cfg)
        _apply_options(rs, sensor, cfg)
        queue = rs.frame_queue(cfg.frame_queue_capacity)
        try:
            sensor.open(profile)
        except RuntimeError as exc:
            raise DeviceNotFound(f"camera {cfg.name!r}: RealSense {cfg.serial} is connected but its colour "
                                 f"sensor could not be opened ({exc}); is another program (realsense-viewer, "
                                 "another robot-rl serve) using it?") from exc
        try:
            sensor.start(queue)
        except RuntimeError:
            sensor.close()
            raise
        self._sensor, self._queue = sensor, queue
        log.info("camera %s: RealSense %s streaming rgb8 %dx%d@%d", cfg.name, cfg.serial, cfg.width, cfg.height,
                 cfg.fps)

    def _grab(self) -> tuple[np.ndarray, int]:
        rs, cfg = self._rs, self.config
        deadline_ns = time.monotonic_ns() + int(cfg.frame_timeout_s * 1e9)
        while True:
            if self._stop.is_set():
                raise _Stopped
            ok, frame = self._queue.try_wait_for_frame(_POLL_MS)
            if ok:
                break
            if time.monotonic_ns() > deadline_ns:
                raise DeviceNotFound(f"camera {cfg.name!r}: RealSense {cfg.serial} sent no frame in "
                                     f"{cfg.frame_timeout_s} s; check the cable and USB bandwidth (USB 3 port, "
                                     "fewer cameras per hub or a lower fps)")
        # A frame that arrived while we waited is newer: take it, drop the older one.
        while True:
            ok, newer = self._queue.try_wait_for_frame(0)
            if not ok:
                break
            frame = newer
        monotonic_now_ns = time.monotonic_ns()
        wall_now_ns = time.time_ns()
        image = _rgb_copy(rs, frame, cfg)
        domain = frame.get_frame_timestamp_domain()
        self.timestamp_domain = domain.name
        if domain != rs.timestamp_domain.global_time:
            self._warn_once("domain", f"frame stamps are in the {domain.name} domain, not global time (is "
                            "global_time_enabled off?): t_capture_ns is receive time")
            return image, monotonic_now_ns
        t_capture_ns = global_time_ms_to_monotonic_ns(frame.get_timestamp(), wall_now_ns=wall_now_ns,
                                                      monotonic_now_ns=monotonic_now_ns)
        if t_capture_ns is None:
            age_ms = wall_now_ns / 1e6 - frame.get_timestamp()
            self._warn_once("implausible", f"a global-time stamp is {age_ms:.0f} ms from now (wall-clock step "
                            "or stalled camera): t_capture_ns is receive time for such frames")
            return image, monotonic_now_ns
        return image, t_capture_ns

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("camera %s: %s", self.name, message)

    def _close(self) -> None:
        sensor, self._sensor, self._queue = self._sensor, None, None
        if sensor is None:
            return
        for step in (sensor.stop, sensor.close):
            try:
                step()
            except RuntimeError as exc:  # already stopped or unplugged: nothing left to release
                log.warning("camera %s: %s failed while closing: %s", self.name, step.__name__, exc)


def _rgb_copy(rs: Any, frame: Any, cfg: RealSenseConfig) -> np.ndarray:
    """(H, W, 3) uint8 RGB copy of an rgb8 colour frame (the frame's buffer returns to librealsense)."""
    if frame.profile.format() != rs.format.rgb8:
        raise RuntimeError(f"camera {cfg.name!r}: expected rgb8 frames, got {frame.profile.format()}")
    data = np.asanyarray(frame.as_video_frame().get_data())
    if data.shape != (cfg.height, cfg.width, 3):
        raise RuntimeError(f"camera {cfg.name!r}: frame shape {data.shape}, expected {(cfg.height, cfg.width, 3)}")
    return np.array(data, dtype=np.uint8, copy=True)
