"""Robot-PC camera config: a YAML list of cameras loaded into typed driver configs, and the drivers.

File layout (see hardware/cameras/example.yaml)::

    cameras:
      - driver: realsense      # or opencv, or ros2 (an image topic: robot_rl/ros2/camera.py)
        name: wrist
        serial: "123456789012"
        output: {height: 128, width: 128, crop_xywh: [80, 0, 480, 480]}

Every other key is a field of `RealSenseConfig`, `OpenCVCameraConfig` or `Ros2CameraConfig`. Errors
name the entry and field, e.g. `cameras[1] (front).fps: expected an integer, got 'thirty'`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any


from robot_rl.config import from_dict, read_yaml
from robot_rl.drivers.camera import CameraDriver
from robot_rl.drivers.opencv_camera import OpenCVCamera, OpenCVCameraConfig
from robot_rl.drivers.realsense import RealSenseCamera, RealSenseConfig
from robot_rl.errors import ConfigError
from robot_rl.ros2.camera import Ros2Camera, Ros2CameraConfig

CameraConfig = RealSenseConfig | OpenCVCameraConfig | Ros2CameraConfig

DRIVER_CONFIGS: dict[str, type[RealSenseConfig | OpenCVCameraConfig | Ros2CameraConfig]] = {
    "realsense": RealSenseConfig,
    "opencv": OpenCVCameraConfig,
    "ros2": Ros2CameraConfig,
}
"""The `driver:` values a camera entry may have, and the config each one loads into."""


def camera_configs_from_dict(data: Mapping[str, Any] | None, *, where: str = "camera config") -> list[CameraConfig]:
    """Typed configs from a mapping `{"cameras": [entry, ...]}` (a parsed YAML file).

    Raises:
        ConfigError: a missing or unknown `driver`, a bad field (the message names entry and field),
            or two cameras sharing a name, serial or source.
    """
    if not isinstance(data, Mapping) or set(data) != {"cameras"}:
        keys = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise ConfigError(f"{where}: expected one top-level key 'cameras' (a list), got {keys}")
    entries = data["cameras"]
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: cameras must be a list of camera entries, got {type(entries).__name__}")
    configs: list[CameraConfig] = []
    for i, entry in enumerate(entries):
        label = f"cameras[{i}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: {label} must be a mapping with driver, name, ..., got {entry!r}")
        if isinstance(entry.get("name"), str):
            label += f" ({entry['name']})"
        driver = entry.get("driver")
        if driver not in DRIVER_CONFIGS:
            raise ConfigError(f"{where}: {label}.driver must be one of {sorted(DRIVER_CONFIGS)}, got {driver!r}")
        fields = {k: v for k, v in entry.items() if k != "driver"}
        if driver == "realsense" and isinstance(fields.get("serial"), int) and not isinstance(fields["serial"], bool):
            # YAML reads an unquoted serial as a number and drops leading zeros.
            raise ConfigError(f"{where}: {label}.serial must be a quoted string, e.g. serial: \"{fields['serial']}\" "
                              "(unquoted, YAML reads a number and drops leading zeros)")
        cls = DRIVER_CONFIGS[driver]
        missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in fields
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"{where}: {label}: missing required field(s) {missing} for driver {driver}")
        try:
            configs.append(from_dict(cls, fields, where=label))
        except ConfigError as exc:
            # Checks inside nested configs (ImageTransform) do not know their path: add the entry.
            message = str(exc)
            raise ConfigError(f"{where}: {message if message.startswith(label) else f'{label}: {message}'}") from exc
    _check_unique(configs, where)
    return configs


def _check_unique(configs: list[CameraConfig], where: str) -> None:
    seen: dict[tuple[str, object], str] = {}
    for cfg in configs:
        keys = [("name", cfg.name)]
        if isinstance(cfg, RealSenseConfig):
            keys.append(("serial", cfg.serial))
        elif isinstance(cfg, Ros2CameraConfig):
            keys.append(("topic", cfg.topic))
        else:
            keys.append(("source", cfg.source))
        for key in keys:
            if key in seen:
                raise ConfigError(f"{where}: cameras {seen[key]!r} and {cfg.name!r} have the same {key[0]} {key[1]!r}")
            seen[key] = cfg.name


def load_camera_configs(path: str | Path) -> list[CameraConfig]:
    """Typed configs of every camera in a YAML file.

    Raises:
        ConfigError: the file is missing, is not valid YAML, or an entry is invalid.
    """
    path = Path(path)
    data = read_yaml(path, "camera config", "hardware/cameras/example.yaml")
    return camera_configs_from_dict(data, where=f"camera config {path}")


def build_cameras(configs: list[CameraConfig]) -> list[CameraDriver]:
    """One driver per config, not yet started (`LiveCameras` starts them).

    Raises:
        ConfigError: a config of a type no driver handles.
    """
    drivers: list[CameraDriver] = []
    for cfg in configs:
        if isinstance(cfg, RealSenseConfig):
            drivers.append(RealSenseCamera(cfg))
        elif isinstance(cfg, OpenCVCameraConfig):
            drivers.append(OpenCVCamera(cfg))
        elif isinstance(cfg, Ros2CameraConfig):
            drivers.append(Ros2Camera(cfg))
        else:
            raise ConfigError(f"no camera driver for {type(cfg).__name__}; expected one of "
                              f"{[c.__name__ for c in DRIVER_CONFIGS.values()]}")
    return drivers
