"""Camera interface of the robot PC: newest-frame drivers, crop/resize, and the server's frame source.

A driver captures on its own thread and keeps only the newest processed frame (crop, then resize,
done here on the robot PC so only small images cross the network). Each frame carries the
sensor's capture time and the robot PC's receive time, both on the robot PC's monotonic clock.

Threading: a driver's capture thread is the only writer of its newest frame, published by one
reference assignment; `latest()` may be called from any thread.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from robot_rl.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    """One processed image."""

    camera: str
    seq: int
    t_capture_ns: int
    t_receive_ns: int
    image: np.ndarray
    """(H, W, 3) uint8 RGB."""


@dataclass(frozen=True)
class ImageTransform:
    """Crop (in source pixels) then resize (INTER_AREA), as configured per camera on the robot PC."""

    height: int
    width: int
    crop_xywh: tuple[int, int, int, int] | None = None
    """Region `[x y w h]` of the source image to keep before resizing; None keeps all."""

    def __post_init__(self) -> None:
        if not (8 <= self.height <= 2160 and 8 <= self.width <= 3840):
            raise ConfigError(f"output size {self.height}x{self.width} outside 8..2160 x 8..3840")
        if self.crop_xywh is not None and (min(self.crop_xywh) < 0 or self.crop_xywh[2] < 1 or self.crop_xywh[3] < 1):
            raise ConfigError(f"crop_xywh must be non-negative with positive size, got {self.crop_xywh}")

    def apply(self, image: np.ndarray) -> np.ndarray:
        if self.crop_xywh is not None:
            x, y, w, h = self.crop_xywh
            if y + h > image.shape[0] or x + w > image.shape[1]:
                raise ConfigError(f"crop {self.crop_xywh} exceeds the {image.shape[1]}x{image.shape[0]} source image")
            image = image[y:y + h, x:x + w]
        if image.shape[0] != self.height or image.shape[1] != self.width:
            image = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(image)


class CameraDriver(Protocol):
    """A running camera: `start()` once, `latest()` from any thread, `stop()` once."""

    name: str
    height: int
    width: int

    def start(self) -> None:
        ...

    def latest(self) -> Frame | None:
        ...

    def stop(self) -> None:
        ...


class ThreadedCamera:
    """Base for drivers that grab in a loop: subclasses implement `_open`, `_grab` and `_close`.

    `_grab()` blocks until the next image and returns `(rgb_image, t_capture_ns)`.
    """

    def __init__(self, name: str, transform: ImageTransform) -> None:
        self.name = name
        self.transform = transform
        self.height, self.width = transform.height, transform.width
        self._latest: Frame | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self.error: BaseException | None = None

    def _open(self) -> None:
        raise NotImplementedError

    def _grab(self) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._open()
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                image, t_capture_ns = self._grab()
                t_receive_ns = time.monotonic_ns()
                self._seq += 1
                self._latest = Frame(self.name, self._seq, t_capture_ns, t_receive_ns, self.transform.apply(image))
        except BaseException as exc:
            if not self._stop.is_set():
                log.exception("camera %s stopped", self.name)
                self.error = exc
        finally:
            self._close()

    def latest(self) -> Frame | None:
        if self.error is not None:
            raise RuntimeError(f"camera {self.name} failed: {self.error}") from self.error
        return self._latest

    def wait_first(self, timeout_s: float = 5.0) -> Frame:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            frame = self.latest()
            if frame is not None:
                return frame
            time.sleep(0.005)
        raise TimeoutError(f"camera {self.name} delivered no frame within {timeout_s} s")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)


class FrameSource(Protocol):
    """What the robot server asks for images (live drivers or the twin renderer)."""

    def camera_sizes(self) -> dict[str, tuple[int, int]]:
        """(height, width) of each camera by name."""
        ...

    def frames(self, names: tuple[str, ...], sim_state: np.ndarray | None, t_ns: int) -> list[Frame]:
        """Newest frame of each named camera (the twin renders `sim_state` when stepped)."""
        ...

    def on_reset(self, seed: int) -> None:
        """Called at each reset (the twin re-randomizes colours and lights)."""
        ...

    def close(self) -> None:
        ...


class LiveCameras:
    """`FrameSource` over running drivers (RealSense, OpenCV): returns each driver's newest frame."""

    def __init__(self, drivers: list[CameraDriver], *, first_frame_timeout_s: float = 5.0) -> None:
        self.drivers = {d.name: d for d in drivers}
        for d in drivers:
            d.start()
        deadline = time.monotonic() + first_frame_timeout_s
        for d in drivers:
            while d.latest() is None:
                if time.monotonic() > deadline:
                    self.close()
                    raise TimeoutError(f"camera {d.name} delivered no frame within {first_frame_timeout_s} s")
                time.sleep(0.005)

    def camera_sizes(self) -> dict[str, tuple[int, int]]:
        return {name: (d.height, d.width) for name, d in self.drivers.items()}

    def frames(self, names: tuple[str, ...], sim_state: np.ndarray | None, t_ns: int) -> list[Frame]:
        out = []
        for n in names:
            frame = self.drivers[n].latest()
            if frame is not None:
                out.append(frame)
        return out

    def on_reset(self, seed: int) -> None:
        """Real cameras see the real scene: nothing to randomize."""

    def close(self) -> None:
        for d in self.drivers.values():
            d.stop()


class NoCameras:
    """`FrameSource` of a robot without cameras."""

    def camera_sizes(self) -> dict[str, tuple[int, int]]:
        return {}

    def frames(self, names: tuple[str, ...], sim_state: np.ndarray | None, t_ns: int) -> list[Frame]:
        return []

    def on_reset(self, seed: int) -> None:
        pass

    def close(self) -> None:
        pass
