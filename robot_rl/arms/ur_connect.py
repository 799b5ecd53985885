"""Connecting the UR backend: the vendor modules, the connection objects, and the checks made
before anything moves (dashboard reachable and in Remote Control, TCP agreeing with the model,
gripper activated). Every function here runs once, at connect or close, on the control thread."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from robot_rl.arms.ur_model import URModel
from robot_rl.control import rotations
from robot_rl.errors import ConfigError, DependencyMissing, DeviceNotFound

if TYPE_CHECKING:
    from robot_rl.arms.ur_arm import URArmConfig

log = logging.getLogger(__name__)


class URVendor(NamedTuple):
    """The three ur_rtde modules (or a double standing in for them)."""

    rtde_control: Any
    rtde_receive: Any
    dashboard_client: Any


def real_vendor() -> URVendor:
    """ur_rtde's modules, imported only now (every robot_rl module imports without the `ur` extra).

    Raises:
        DependencyMissing: ur_rtde is not installed.
    """
    try:
        import dashboard_client
        import rtde_control
        import rtde_receive
    except ImportError as exc:
        raise DependencyMissing(f"the UR backend needs ur_rtde ({exc}): pip install 'robot_rl[ur]'") from exc
    return URVendor(rtde_control, rtde_receive, dashboard_client)


def ur_to_quat(pose_ur: list[float]) -> np.ndarray:
    """UR's rotation vector `[.. rx ry rz]` → quaternion `[w x y z]`."""
    return rotations.rotvec_to_quat(np.asarray(pose_ur[3:6], dtype=np.float64))


@dataclass
class Links:
    """The open vendor objects (closed together)."""

    dashboard: Any = None
    receive: Any = None
    control: Any = None
    gripper: Any = None
    worker: Any = None
    owned: tuple = ()
    """Objects closed last with the arm (a double behind the vendor modules)."""


def open_dashboard(vendor: URVendor, host: str, timeout_s: float):
    dashboard = vendor.dashboard_client.DashboardClient(host)
    try:
        dashboard.connect(int(timeout_s * 1000))
    except RuntimeError as exc:
        raise DeviceNotFound(
            f"no UR controller answers at {host} (dashboard server, port 29999: {exc}): check the address "
            f"(--robot-ip), that this PC is on the robot's network, and that the controller is on") from exc
    if not dashboard.isInRemoteControl():
        dashboard.disconnect()
        raise DeviceNotFound(f"the UR controller at {host} is in Local control: switch the pendant to Remote "
                             "Control (top right of PolyScope; enable it under Settings > System > Remote Control)")
    return dashboard


def check_tcp(control, receive, model: URModel, config: URArmConfig, host: str) -> None:
    """The controller's TCP pose and the model's at the same joints must agree. RTDE's output lags
    `setTcp` by a cycle or more: compare over up to 25 cycles (50 ms) before giving up."""
    for _ in range(25):
        t_cycle = control.initPeriod()
        q = np.asarray(receive.getActualQ(), dtype=np.float64)
        mine = model.compute(q, np.zeros_like(q))[0]
        theirs = receive.getActualTCPPose()
        off_m = float(np.linalg.norm(mine[:3] - np.asarray(theirs[:3])))
        off_rad = rotations.quat_angle(mine[3:], ur_to_quat(theirs))
        if off_m <= config.tcp_check_m and off_rad <= config.tcp_check_rad:
            return
        control.waitPeriod(t_cycle)
    raise ConfigError(
        f"the UR controller at {host} puts the TCP {off_m * 1e3:.1f} mm / {off_rad:.3f} rad away from robot_rl's "
        f"model (limits {config.tcp_check_m * 1e3:.0f} mm, {config.tcp_check_rad} rad) at the same joints: check "
        "the arm type (sim/ur5e_twin.xml is a UR5e), the mounting in the installation (base frame) and that "
        "no other program changes the TCP. If x and y come out negated, the base frame is turned π about z.")


def open_gripper(config: URArmConfig, host: str):
    from robot_rl.arms.gripper_worker import GripperWorker
    from robot_rl.arms.robotiq import RobotiqGripper

    gripper = RobotiqGripper(config.gripper_host or host, port=config.gripper_port)
    gripper.connect()
    try:
        gripper.activate()
        worker = GripperWorker("robotiq", gripper.move, gripper.read_width)
    except BaseException:
        gripper.close()
        raise
    return gripper, worker


def close_links(links: Links) -> None:
    for name, obj, method in (("gripper worker", links.worker, "close"), ("gripper", links.gripper, "close"),
                              ("RTDE control", links.control, "disconnect"),
                              ("RTDE receive", links.receive, "disconnect"),
                              ("dashboard", links.dashboard, "disconnect")):
        if obj is None:
            continue
        try:
            getattr(obj, method)()
        except Exception as exc:
            log.warning("closing the UR %s failed: %s: %s", name, type(exc).__name__, exc)
    for obj in links.owned:
        try:
            obj.close()
        except Exception as exc:
            log.warning("closing %s failed: %s: %s", type(obj).__name__, type(exc).__name__, exc)
