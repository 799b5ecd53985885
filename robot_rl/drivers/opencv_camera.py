"""USB (UVC) cameras and replayed video files on the robot PC, through OpenCV's VideoCapture.

A source is a device index (0 is /dev/video0), a device path (/dev/v4l/by-id/..., stable across
reboots), or a path to a video file. A file plays like a live camera: paced at `fps` and looped, so
recorded footage can stand in for a camera (and tests need no webcam).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from robot_rl.drivers.camera import ImageTransform, ThreadedCamera
from robot_rl.errors import ConfigError, DeviceNotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenCVCameraConfig:
    """One OpenCV camera; images are cropped and resized on the robot PC."""

    name: str
    """Camera name the task and the wire use, e.g. "front"."""
    source: int | str
    """Device index (0 = /dev/video0), device path, or video file path."""
    output: ImageTransform = field(default_factory=lambda: ImageTransform(height=128, width=128))
    """Crop (in source pixels) then resize applied to every frame."""
    width: int | None = 640
    """Capture width [px] requested from a device (it may pick another: a warning says so); None keeps
    the device's. Ignored for files."""
    height: int | None = 480
    """Capture height [px], as `width`."""
    fps: float = 30.0
    """Rate [frames/s] requested from a device; a file is played at this rate."""
    fourcc: str | None = None
    """Pixel format requested from a device, e.g. "MJPG" (many USB 2 webcams reach 30 fps at 640x480
    only in MJPG); None keeps the device's."""
    open_timeout_s: float = 3.0
    """The first frame must arrive within this time, or `start()` raises DeviceNotFound."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("OpenCVCameraConfig.name must be a non-empty camera name")
        if isinstance(self.source, bool) or not isinstance(self.source, (int, str)):
            raise ConfigError(f"source must be a device index or a path, got {self.source!r}")
        if isinstance(self.source, int) and self.source < 0:
            raise ConfigError(f"source index must be >= 0, got {self.source}")
        if isinstance(self.source, str) and not self.source:
            raise ConfigError("source path must not be empty")
        for key in ("width", "height"):
            value = getattr(self, key)
            if value is not None and not 1 <= value <= 4096:
                raise ConfigError(f"{key} must be in 1..4096 or null, got {value}")
        if not 0 < self.fps <= 300:
            raise ConfigError(f"fps must be in (0, 300], got {self.fps}")
        if self.fourcc is not None and len(self.fourcc) != 4:
            raise ConfigError(f"fourcc must be 4 characters like \"MJPG\", got {self.fourcc!r}")
        if not self.open_timeout_s > 0:
            raise ConfigError(f"open_timeout_s must be > 0, got {self.open_timeout_s}")

    @property
    def is_file(self) -> bool:
        """True when `source` is a regular file (device nodes such as /dev/video0 are not)."""
        return isinstance(self.source, str) and os.path.isfile(self.source)


class OpenCVCamera(ThreadedCamera):
    """A `cv2.VideoCapture` camera; newest frame, converted from OpenCV's BGR to RGB.

    Threading: the owner calls `start()` once (opens the device and reads a first frame in the
    caller's thread, so a missing camera raises there), `latest()` from any thread, `stop()` once.
    After `start()` only the capture thread touches the VideoCapture; it releases it when it stops,
    within one frame period of `stop()`.

    Timestamps: OpenCV gives no portable capture time, so `t_capture_ns` is the monotonic time
    `read()` returned (an upper bound: the true exposure is one frame period or so earlier).

    Args:
        config: the camera's settings.
    """

    def __init__(self, config: OpenCVCameraConfig) -> None:
        super().__init__(config.name, config.output)
        self.config = config
        self._cap: cv2.VideoCapture | None = None
        self._first: tuple[np.ndarray, int] | None = None
        self._next_due_ns = 0
        self._is_file = False
        self.capture_size: tuple[int, int] | None = None
        """(height, width) of the images the source actually delivers."""

    def _open(self) -> None:
        cfg = self.config
        self._is_file = cfg.is_file
        if isinstance(cfg.source, str) and not self._is_file and not os.path.exists(cfg.source):
            raise DeviceNotFound(f"camera {cfg.name!r}: {cfg.source} does not exist; list cameras with "
                                 "`ls /dev/v4l/by-id/` or `v4l2-ctl --list-devices`")
        cap = cv2.VideoCapture(cfg.source)
        if not cap.isOpened():
            cap.release()
            raise DeviceNotFound(f"camera {cfg.name!r}: OpenCV could not open {cfg.source!r}; is it plugged in, "
                                 "readable by this user (group video) and not used by another program? "
                                 "List cameras with `v4l2-ctl --list-devices`")
        if not self._is_file:
            self._configure(cap)
        first = self._read_first(cap)
        self.capture_size = first[0].shape[:2]
        crop = cfg.output.crop_xywh
        if crop is not None and (crop[0] + crop[2] > first[0].shape[1] or crop[1] + crop[3] > first[0].shape[0]):
            cap.release()
            raise ConfigError(f"camera {cfg.name!r}: output.crop_xywh {list(crop)} exceeds the "
                              f"{first[0].shape[1]}x{first[0].shape[0]} images of {cfg.source!r}")
        self._cap, self._first = cap, first
        self._next_due_ns = first[1]
        log.info("camera %s: %s delivering %dx%d", cfg.name, cfg.source, first[0].shape[1], first[0].shape[0])

    def _configure(self, cap: cv2.VideoCapture) -> None:
        cfg = self.config
        if cfg.fourcc is not None:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*cfg.fourcc))
        if cfg.width is not None:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
        if cfg.height is not None:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
        cap.set(cv2.CAP_PROP_FPS, cfg.fps)
        # One buffered frame keeps reads close to the newest image (V4L2 supports it; others ignore it).
        if not cap.set(cv2.CAP_PROP_BUFFERSIZE, 1):
            log.debug("camera %s: backend ignores CAP_PROP_BUFFERSIZE; frames may lag by a few periods", cfg.name)
        got_w, got_h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        got_fps = cap.get(cv2.CAP_PROP_FPS)
        if (cfg.width not in (None, got_w)) or (cfg.height not in (None, got_h)) or abs(got_fps - cfg.fps) > 0.5:
            log.warning("camera %s: asked %sx%s@%g, device gives %dx%d@%g", cfg.name, cfg.width, cfg.height,
                        cfg.fps, got_w, got_h, got_fps)

    def _read_first(self, cap: cv2.VideoCapture) -> tuple[np.ndarray, int]:
        # read() can block forever on a half-working device, so the first one runs on a helper thread.
        cfg = self.config
        result: list[tuple[bool, np.ndarray | None]] = []
        reader = threading.Thread(target=lambda: result.append(cap.read()), name=f"camera-{cfg.name}-open",
                                  daemon=True)
        reader.start()
        reader.join(cfg.open_timeout_s)
        if reader.is_alive():
            # The blocked read still uses `cap`, so it is not released here: it goes with the process.
            raise DeviceNotFound(f"camera {cfg.name!r}: {cfg.source!r} opened but sent no frame in "
                                 f"{cfg.open_timeout_s} s; check the cable, or try fourcc: MJPG or a lower size")
        if not result or not result[0][0] or result[0][1] is None:
            cap.release()
            raise DeviceNotFound(f"camera {cfg.name!r}: {cfg.source!r} opened but its first read failed "
                                 "(no frame); is it a capture device (some /dev/video* nodes are metadata "
                                 "only) or an empty video file?")
        return _to_rgb(result[0][1], cfg.name), time.monotonic_ns()

    def _grab(self) -> tuple[np.ndarray, int]:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        cfg, cap = self.config, self._cap
        assert cap is not None
        if self._is_file:
            # A live camera paces reads itself; a file would otherwise be decoded as fast as possible.
            self._next_due_ns += int(1e9 / cfg.fps)
            delay_s = (self._next_due_ns - time.monotonic_ns()) / 1e9
            if delay_s > 0:
                self._stop.wait(delay_s)
            else:
                self._next_due_ns = time.monotonic_ns()  # fell behind: do not burst to catch up
        ok, image = cap.read()
        if not ok and self._is_file:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = cap.read()
        t_capture_ns = time.monotonic_ns()
        if not ok or image is None:
            raise DeviceNotFound(f"camera {cfg.name!r}: reading {cfg.source!r} failed (unplugged?)")
        return _to_rgb(image, cfg.name), t_capture_ns

    def _close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


def _to_rgb(image: np.ndarray, camera: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an OpenCV BGR (or grey) image."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise RuntimeError(f"camera {camera!r}: unexpected image shape {image.shape} from OpenCV")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGB)
