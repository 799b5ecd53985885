"""Cartesian admittance filter for position-controlled arms (UR `servoL`): a pure function per tick.

A UR controller without direct torque only follows poses. To give it the same compliance as the
impedance law, a virtual TCP with mass M is pulled toward the law's reference by the command's
spring K (error clipped per axis, translational force capped) and damping D, and pushed by the
measured external wrench F:

    M·v̇ = −K·clip(x − x_ref) − D·v + F            (x: virtual pose, v: its twist, base frame)

The arm is then servoed to x. In free space x converges to the reference; against a force F
(below K·clip) it rests at x_ref + K⁻¹F, as a torque-controlled arm under the impedance law does;
in static contact with the reference beyond the obstacle the contact force settles at K·clip.
The twist is speed-limited (the task's TCP speed, a rotational speed) and the pose is kept in the
workspace box and within `max_lead_m` of the measured TCP, so a blocked arm never has a target
running away from it.

With D = 2√K (the law's default) and unit mass the filter is critically damped; damping is
integrated implicitly, so the brake's tripled damping cannot make it unstable.

Nothing here reads a clock, a socket or a simulator, and no argument is modified.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from robot_rl.control import rotations
from robot_rl.control.impedance import pose_error
from robot_rl.control.safety import WorkspaceBox


@dataclass(frozen=True)
class AdmittanceParams:
    """The virtual TCP's dynamics and the force sensor's deadband."""

    mass_kg: float = 1.0
    """Virtual mass on x, y, z: with D = 2√K (the law's default damping) the filter is critically
    damped at unit mass; heavier is slower and calmer in stiff contact."""
    inertia_kg_m2: float = 1.0
    """Virtual rotational inertia about x, y, z (critically damped at 1 for D = 2√K, as above)."""
    force_deadband_n: float = 0.0
    """Per-axis force magnitude ignored (sensor noise and offset); the rest passes: F − sign(F)·band."""
    torque_deadband_nm: float = 0.0
    """Per-axis torque magnitude ignored."""

    def __post_init__(self) -> None:
        for name in ("mass_kg", "inertia_kg_m2"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0.01 <= v <= 100.0):
                raise ValueError(f"AdmittanceParams.{name} must be in [0.01, 100], got {v}")
        for name in ("force_deadband_n", "torque_deadband_nm"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0.0 <= v <= 50.0):
                raise ValueError(f"AdmittanceParams.{name} must be in [0, 50], got {v}")


@dataclass(frozen=True)
class AdmittanceLimits:
    """Where and how fast the virtual TCP may go: the task's limits, and the servo's lead."""

    box: WorkspaceBox
    """The task's workspace box (position and rotation bounds)."""
    max_tcp_speed_m_per_s: float = 0.1
    """Translational speed limit (the task's `law.max_tcp_speed_m_per_s`)."""
    max_tcp_speed_rad_per_s: float = 1.0
    """Rotational speed limit (the impedance law has none; the reset motion's rotation speed)."""
    max_spring_force_n: float = 30.0
    """Cap on the norm of the translational spring force, as the law's `max_spring_force_n`."""
    max_lead_m: float = 0.03
    """How far the virtual TCP may be from the measured one: a blocked or lagging arm does not get
    a target running away from it."""

    def __post_init__(self) -> None:
        for name, lo, hi in (("max_tcp_speed_m_per_s", 0.001, 2.0), ("max_tcp_speed_rad_per_s", 0.001, 6.0),
                             ("max_spring_force_n", 0.0, 500.0), ("max_lead_m", 0.001, 0.5)):
            v = getattr(self, name)
            if not (math.isfinite(v) and lo <= v <= hi):
                raise ValueError(f"AdmittanceLimits.{name} must be in [{lo}, {hi}], got {v}")


class AdmittanceState(NamedTuple):
    """The virtual TCP, carried from one tick to the next."""

    pose_base_tcp: np.ndarray
    """(7,) `[x y z qw qx qy qz]`, m, base frame: the pose the arm is servoed to."""
    twist_base_tcp: np.ndarray
    """(6,) `[vx vy vz wx wy wz]`, m/s and rad/s, base frame."""

    @classmethod
    def at_rest(cls, pose_base_tcp: np.ndarray) -> AdmittanceState:
        """The virtual TCP at `pose_base_tcp`, still (start-up, after a fault or a joint move)."""
        return cls(np.array(pose_base_tcp, dtype=np.float64), np.zeros(6))


def _deadband(values: np.ndarray, band: float) -> np.ndarray:
    if band <= 0.0:
        return values
    return np.sign(values) * np.maximum(np.abs(values) - band, 0.0)


def admittance_step(state: AdmittanceState, ref_pose: np.ndarray, gains: np.ndarray, wrench_ext_base: np.ndarray,
                    measured_pose: np.ndarray, dt_s: float, params: AdmittanceParams,
                    limits: AdmittanceLimits) -> AdmittanceState:
    """One tick of the admittance filter.

    Args:
        state: the virtual TCP after the previous tick (or `AdmittanceState.at_rest`).
        ref_pose: (7,) the law's filtered, box-clipped reference `[x y z qw qx qy qz]` (m, base).
        gains: (3, 6) rows stiffness K (N/m, N·m/rad), damping D (N·s/m, N·m·s/rad) and the
            per-axis error clip (m, rad), `[trans x y z, rot x y z]` (`ArmCommand.gains`).
        wrench_ext_base: (6,) external force [N] and torque [N·m] on the tool, base frame, at the TCP.
        measured_pose: (7,) the arm's measured TCP pose: the virtual TCP stays within
            `limits.max_lead_m` of it.
        dt_s: tick length [s] (0.002 at UR's 500 Hz).

    Returns:
        The virtual TCP after `dt_s`: the pose to servo the arm to, and its twist.

    Raises:
        ValueError: an argument has the wrong shape or dt_s is not in (0, 0.1] s.
    """
    if np.shape(ref_pose) != (7,) or np.shape(measured_pose) != (7,) or np.shape(gains) != (3, 6) \
            or np.shape(wrench_ext_base) != (6,):
        raise ValueError(f"admittance_step wants ref_pose (7,), gains (3, 6), wrench (6,), measured_pose (7,); got "
                         f"{np.shape(ref_pose)}, {np.shape(gains)}, {np.shape(wrench_ext_base)}, "
                         f"{np.shape(measured_pose)}")
    if not 0.0 < dt_s <= 0.1:
        raise ValueError(f"dt_s must be in (0, 0.1] s, got {dt_s}")
    k, d, clip = gains[0], gains[1], gains[2]
    pose, twist = state.pose_base_tcp, state.twist_base_tcp

    spring = -k * np.clip(pose_error(pose, ref_pose), -clip, clip)
    f_norm = math.sqrt(float(spring[:3] @ spring[:3]))
    if f_norm > limits.max_spring_force_n:
        spring[:3] *= limits.max_spring_force_n / f_norm
    external = np.concatenate((_deadband(wrench_ext_base[:3], params.force_deadband_n),
                               _deadband(wrench_ext_base[3:], params.torque_deadband_nm)))
    inv_mass = np.array([1.0 / params.mass_kg] * 3 + [1.0 / params.inertia_kg_m2] * 3)
    # Semi-implicit Euler with implicit damping: v' = (v + dt·M⁻¹(spring + F)) / (1 + dt·M⁻¹·D).
    v = (twist + dt_s * inv_mass * (spring + external)) / (1.0 + dt_s * inv_mass * d)

    speed = math.sqrt(float(v[:3] @ v[:3]))
    if speed > limits.max_tcp_speed_m_per_s:
        v[:3] *= limits.max_tcp_speed_m_per_s / speed
    spin = math.sqrt(float(v[3:] @ v[3:]))
    if spin > limits.max_tcp_speed_rad_per_s:
        v[3:] *= limits.max_tcp_speed_rad_per_s / spin

    pos = pose[:3] + v[:3] * dt_s
    rx, ry, rz = v[3] * dt_s, v[4] * dt_s, v[5] * dt_s
    quat = rotations.qnormalize(rotations.qmul(rotations.qfrom_rotvec(rx, ry, rz),
                                               (pose[3], pose[4], pose[5], pose[6])))
    lead = pos - measured_pose[:3]
    lead_m = math.sqrt(float(lead @ lead))
    if lead_m > limits.max_lead_m:
        pos = measured_pose[:3] + lead * (limits.max_lead_m / lead_m)
        u = lead / lead_m
        outward = float(v[:3] @ u)
        if outward > 0.0:
            v[:3] -= outward * u  # stop moving away from the arm; motion back toward it stays
    clipped, _ = limits.box.clip((pos[0], pos[1], pos[2], *quat))
    for i in range(3):
        if clipped[i] != pos[i]:
            v[i] = 0.0  # at the box wall: no velocity into it (none stored up to release later)
    if clipped[3] != quat[0] or clipped[4] != quat[1] or clipped[5] != quat[2] or clipped[6] != quat[3]:
        v[3:] = 0.0  # the box clipped the orientation (it returns an unclipped one as given)
    return AdmittanceState(clipped, v)
