"""`URBackend`: the picklable recipe that builds a UR arm backend inside the control process.

    --backend ur --robot-ip 192.168.1.10 [--ur-mode torque|servo]   a physical UR e-Series arm
    --backend ur-double [--ur-mode torque|servo]                    the same URArm code against the
                                                                    ur_rtde double (UR5e twin physics)

The physical arm is checked before the control process starts: the `ur` extra must be installed
and the controller's dashboard (29999) and RTDE (30004) ports must answer within 2 s, so a
wrong address fails at once with a sentence saying what to check, and nothing moves.
"""

from __future__ import annotations

import importlib.util
import socket
import time
from dataclasses import dataclass, replace
from typing import Literal

import mujoco
import numpy as np

from robot_rl.arms.ur_admittance import AdmittanceLimits
from robot_rl.arms.ur_arm import URArm, URArmConfig, URVendor, real_vendor
from robot_rl.control.commands import SceneHooks
from robot_rl.control.snapshot import SnapshotLayout
from robot_rl.drivers.arm import ArmSpec
from robot_rl.errors import ConfigError, DependencyMissing, DeviceNotFound
from robot_rl.task_spec import TaskSpec
from robot_rl.twin import arm_models

UR_PERIOD_S = 0.002
"""RTDE's 500 Hz control cycle on e-Series controllers."""
PROBE_TIMEOUT_S = 2.0
PROBE_PORTS = ((29999, "the dashboard server"), (30004, "RTDE"))


def ur_arm_spec(name: str) -> ArmSpec:
    """The UR5e's published limits (`twin/arm_models.UR5E`) at RTDE's 500 Hz, paced by the controller."""
    return replace(arm_models.UR5E.arm_spec(), name=name, period_s=UR_PERIOD_S, paced_by_hardware=True)


def probe_controller(host: str, *, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Check that a UR controller answers at `host` (TCP connect to its dashboard and RTDE ports).

    Raises:
        DeviceNotFound: a port does not answer within the shared `timeout_s` (says what to check).
    """
    deadline = time.monotonic() + timeout_s
    for port, what in PROBE_PORTS:
        left = max(0.05, deadline - time.monotonic())
        try:
            socket.create_connection((host, port), timeout=left).close()
        except OSError as exc:
            hint = ("check the address (--robot-ip), that this PC is on the robot's network and that the "
                    "controller is on" if port == 29999 else
                    "enable RTDE on the pendant (Installation > Security > Services) and check no firewall blocks it")
            raise DeviceNotFound(f"no UR controller answers at {host}: {what} (TCP {port}) did not accept a "
                                 f"connection ({exc}; waited up to {timeout_s} s): {hint}; the pendant must also "
                                 "be in Remote Control") from exc


@dataclass(frozen=True)
class URBackend:
    """`BackendFactory` of a UR arm (physical, or the double). Built inside the control process."""

    task: TaskSpec
    robot_ip: str | None = None
    """The controller's address; None: the ur_rtde double on the task's twin scene."""
    mode: Literal["torque", "servo"] = "torque"
    """`directTorque` running the impedance law, or Cartesian admittance over `servoL`."""
    seed: int = 0
    """Initial scene layout of the double."""
    config: URArmConfig = URArmConfig()
    """Everything else about driving the arm; `mode` overrides `config.mode`."""

    def __post_init__(self) -> None:
        if self.mode not in ("torque", "servo"):
            raise ConfigError(f"--ur-mode must be 'torque' or 'servo', got {self.mode!r}")
        if self.robot_ip is None and self.task.twin is None:
            raise ConfigError(f"task {self.task.name!r} has no `twin:` section, so the UR double cannot simulate it")

    @classmethod
    def for_choice(cls, choice, task: TaskSpec) -> URBackend:
        """The recipe for `robot-rl serve --backend ur|ur-double` (a `registry.BackendChoice`).

        Raises:
            DependencyMissing: --backend ur without ur_rtde installed.
            DeviceNotFound: --backend ur and no controller answers at --robot-ip (within 2 s).
        """
        if choice.backend == "ur-double":
            return cls(task, None, choice.ur_mode, choice.seed)
        missing = [m for m in ("rtde_control", "rtde_receive", "dashboard_client")
                   if importlib.util.find_spec(m) is None]
        if missing:
            raise DependencyMissing(f"--backend ur needs ur_rtde (missing {', '.join(missing)}): "
                                    "pip install 'robot_rl[ur]'")
        probe_controller(choice.robot_ip)
        return cls(task, choice.robot_ip, choice.ur_mode, choice.seed)

    @property
    def is_double(self) -> bool:
        return self.robot_ip is None

    def arm_spec(self) -> ArmSpec:
        return ur_arm_spec("ur-double" if self.is_double else "ur")

    def layout(self) -> SnapshotLayout:
        if not self.is_double:
            return SnapshotLayout(self.arm_spec().n_joints, (), 0)
        from robot_rl.twin import scene as sc
        from robot_rl.twin.arm import TwinArm
        from robot_rl.twin.tasks import make_task

        model = sc.build_model(self.scene_source())
        data = mujoco.MjData(model)
        hooks = make_task(self.task.twin, model, data, TwinArm(model, data, arm="ur5e"))
        return SnapshotLayout(self.arm_spec().n_joints, hooks.privileged_sizes, hooks.sim_state_size)

    def scene_source(self):
        """Files of the double's simulated scene (for the renderers)."""
        if not self.is_double:
            raise ConfigError("a physical UR arm has no simulated scene to render: pass --cameras")
        from robot_rl.twin.backend import scene_source

        return scene_source(self.task, "ur5e")

    def admittance_limits(self) -> AdmittanceLimits:
        """The task's box, TCP speed and spring-force cap, for servo mode's admittance filter."""
        law = self.task.law
        return AdmittanceLimits(box=self.task.workspace, max_tcp_speed_m_per_s=law.max_tcp_speed_m_per_s,
                                max_tcp_speed_rad_per_s=self.config.max_tcp_speed_rad_per_s,
                                max_spring_force_n=law.max_spring_force_n, max_lead_m=self.config.max_lead_m)

    def build(self, *, realtime: bool, resume_sim_state: np.ndarray | None = None
              ) -> tuple[URArm, SceneHooks | None]:
        """Connect the arm (the double: build it first, at `resume_sim_state` after a restart)."""
        config = replace(self.config, mode=self.mode)
        if not self.is_double:
            arm = URArm.connect(real_vendor(), self.robot_ip, spec=self.arm_spec(), config=config,
                                limits=self.admittance_limits())
            return arm, None
        from robot_rl.twin.doubles.ur_twin import URDouble

        double = URDouble.build(self.task, realtime=realtime, seed=self.seed, resume_sim_state=resume_sim_state)
        module = double.vendor_module
        config = replace(config, stamp="robot_pc" if realtime else "controller", gripper_host="127.0.0.1",
                         gripper_port=double.gripper_server.port)
        arm = URArm.connect(URVendor(module, module, module), double.hostname, spec=self.arm_spec(), config=config,
                            limits=self.admittance_limits(), owned=(double,))
        return arm, double
