"""What a ROS 2 arm is sent each command period: pure functions of the core's reference.

The control core hands every backend its filtered, box-clipped reference pose (`ArmCommand`).
A ROS 2 driver's Cartesian controller takes either a pose (an impedance controller's equilibrium
pose) or a twist (a velocity / servo controller). Before either is published, the robot PC's
limits apply once more on this side of the wire:

- pose: the published pose follows the reference at most at the task's TCP speed and a rotational
  speed, stays within `max_lead_m` of the measured TCP (a blocked arm never gets a target running
  away from it, so a driver's spring force stays bounded); the reference itself is already inside
  the workspace box (the core clips every target), or the measured pose while holding;
- twist: gain · (reference − measured TCP), speed-limited the same way.

Nothing here reads a clock, a socket or ROS, and no argument is modified.
"""

from __future__ import annotations

import math

import numpy as np

from robot_rl.control import rotations


def _rotvec_between(frm: np.ndarray, to: np.ndarray) -> tuple[float, float, float]:
    """Rotation vector (base frame) taking orientation `frm` to `to` (quats wxyz in poses)."""
    return rotations.qto_rotvec(rotations.qmul((to[3], to[4], to[5], to[6]), (frm[3], -frm[4], -frm[5], -frm[6])))


def _limit(v: np.ndarray, max_norm: float) -> np.ndarray:
    n = math.sqrt(float(v @ v))
    return v * (max_norm / n) if n > max_norm else v


def follow_pose(published: np.ndarray, ref: np.ndarray, measured: np.ndarray, dt_s: float, *,
                max_speed_m_per_s: float, max_speed_rad_per_s: float, max_lead_m: float) -> np.ndarray:
    """The next pose to publish in pose mode.

    Args:
        published: (7,) `[x y z qw qx qy qz]` published last time (or the measured TCP at start).
        ref: (7,) the core's reference (`ArmCommand.pose_ref_base_tcp`), base frame.
        measured: (7,) the measured TCP pose.
        dt_s: time since the last publication [s].

    Returns:
        (7,) a fresh pose: `published` moved toward `ref` by at most speed·dt, then kept within
        `max_lead_m` of `measured`. Not clipped to the workspace box: an arm started outside it
        holds where it is, as the core's reference does.
    """
    step = _limit(ref[:3] - published[:3], max_speed_m_per_s * dt_s)
    pos = published[:3] + step
    lead = pos - measured[:3]
    pos = measured[:3] + _limit(lead, max_lead_m)
    rv = np.array(_rotvec_between(published, ref))
    rv = _limit(rv, max_speed_rad_per_s * dt_s)
    q = rotations.qnormalize(rotations.qmul(rotations.qfrom_rotvec(rv[0], rv[1], rv[2]),
                                            (published[3], published[4], published[5], published[6])))
    return np.array([pos[0], pos[1], pos[2], q[0], q[1], q[2], q[3]])


def twist_toward(ref: np.ndarray, measured: np.ndarray, *, gain_per_s: float, max_speed_m_per_s: float,
                 max_speed_rad_per_s: float) -> np.ndarray:
    """The twist to publish in twist mode: (6,) `[vx vy vz wx wy wz]` (m/s, rad/s, base frame),
    gain · (ref − measured), each part speed-limited."""
    v = _limit(gain_per_s * (ref[:3] - measured[:3]), max_speed_m_per_s)
    w = _limit(gain_per_s * np.array(_rotvec_between(measured, ref)), max_speed_rad_per_s)
    return np.concatenate((v, w))


def wrench_in_base(wrench: np.ndarray, pose_base_tcp: np.ndarray) -> np.ndarray:
    """(6,) a wrench given in the TCP frame (at the TCP), rotated into the base frame."""
    r = rotations.quat_to_mat(np.asarray(pose_base_tcp[3:7]))
    return np.concatenate((r @ wrench[:3], r @ wrench[3:]))
