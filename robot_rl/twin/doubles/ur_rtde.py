"""ur_rtde's three classes (rtde_control, rtde_receive, dashboard_client) over a simulated controller.

The classes carry the real names and signatures (tests/arms/test_vendor_api_drift.py checks them
against the installed ur_rtde wheel) and implement the calls robot_rl's UR backend makes, plus a
few an operator script would. A controller is reachable once `plug_in(controller)` puts it on this
process's simulated network under its hostname; constructors for any other host fail the way
ur_rtde's do (RuntimeError naming the host and port). The module stands in for all three vendor
modules: pass it as each of them.

Behaviour (time, servo, stops, watchdog, faults) is the controller's: see `ur_controller.py`.
Threading: as ur_rtde, one thread per object.
"""

from __future__ import annotations

import datetime
import threading
import time

from robot_rl.twin.doubles.ur_controller import SimulatedURController

RTDE_PORT = 30004
DASHBOARD_PORT = 29999

_NETWORK: dict[str, SimulatedURController] = {}
_NETWORK_LOCK = threading.Lock()


def plug_in(controller: SimulatedURController) -> None:
    """Make `controller` reachable at its hostname in this process.

    Raises:
        ValueError: another controller already answers at that hostname.
    """
    with _NETWORK_LOCK:
        if controller.hostname in _NETWORK and _NETWORK[controller.hostname] is not controller:
            raise ValueError(f"a simulated UR controller already answers at {controller.hostname!r}")
        _NETWORK[controller.hostname] = controller


def unplug(controller: SimulatedURController) -> None:
    with _NETWORK_LOCK:
        if _NETWORK.get(controller.hostname) is controller:
            del _NETWORK[controller.hostname]


def _reach(hostname: str, port: int) -> SimulatedURController:
    with _NETWORK_LOCK:
        controller = _NETWORK.get(hostname)
    if controller is None:
        raise RuntimeError(f"Error: Could not connect to: {hostname} at {port}, verify the IP")
    return controller


def _lost(hostname: str) -> RuntimeError:
    return RuntimeError(f"RTDE connection to {hostname} lost: send failed (Broken pipe)")


class _RTDEClient:
    """What both RTDE interfaces share: the connection and the cycle timing."""

    def __init__(self, hostname: str, frequency: float) -> None:
        self._host = hostname
        self._c = _reach(hostname, RTDE_PORT)
        if self._c.comm_lost:
            raise RuntimeError(f"Error: Could not connect to: {hostname} at {RTDE_PORT}, verify the IP")
        self._frequency = 500.0 if frequency <= 0 else float(frequency)
        self._connected = True
        self._c.rtde_clients += 1

    def _live(self) -> bool:
        return self._connected and not self._c.comm_lost

    def isConnected(self) -> bool:
        if self._c.comm_lost:
            self._connected = False
        return self._connected

    def disconnect(self) -> None:
        self._connected = False

    def initPeriod(self) -> datetime.timedelta:
        return datetime.timedelta(seconds=time.monotonic())

    def waitPeriod(self, t_cycle_start: datetime.timedelta) -> None:
        self._c.wait_period(t_cycle_start.total_seconds())


class RTDEControlInterface(_RTDEClient):
    """Commands: directTorque, servoL/servoJ, stops, watchdog, script control, TCP offset."""

    def __init__(self, hostname: str, frequency: float = -1.0, flags: int = 1, ur_cap_port: int = 50002,
                 rt_priority: int = 0) -> None:
        super().__init__(hostname, frequency)
        c = self._c
        c.period_s = 1.0 / self._frequency
        if not c.remote_control:
            raise RuntimeError("ur_rtde: Please enable remote control on the robot!")
        if not c.start_program():
            raise RuntimeError("RTDE control script is not running! (the robot is stopped by safety or powered off)")

    # -- commands (each one writes the input register the script's watchdog watches) --

    def _send(self) -> SimulatedURController:
        if not self._live():
            raise _lost(self._host)
        return self._c

    def directTorque(self, torque: list[float], viscous_scale: list[float] = (0.9, 0.9, 0.8, 0.9, 0.9, 0.9),
                     coulomb_scale: list[float] = (0.8, 0.8, 0.7, 0.8, 0.8, 0.8)) -> bool:
        return self._send().command_torque(torque)

    def servoL(self, pose: list[float], speed: float, acceleration: float, time_s: float, lookahead_time_s: float,
               gain: float) -> bool:
        _check_servo_args(time_s, lookahead_time_s, gain)
        return self._send().command_servo_pose(pose)

    def servoJ(self, q: list[float], speed: float, acceleration: float, time_s: float, lookahead_time_s: float,
               gain: float) -> bool:
        _check_servo_args(time_s, lookahead_time_s, gain)
        return self._send().command_servo_joints(q)

    def servoStop(self, a: float = 10.0) -> bool:
        return self._send().servo_stop()

    def stopScript(self) -> None:
        self._send().stop_program()

    def triggerProtectiveStop(self) -> bool:
        self._send().inject_protective_stop()
        return True

    def setWatchdog(self, min_frequency: float = 10.0) -> bool:
        c = self._send()
        if not c.program_running:
            return False
        c.watchdog_min_hz = float(min_frequency)
        c.input_arrived()
        return True

    def kickWatchdog(self) -> bool:
        c = self._send()
        c.input_arrived()
        return c.program_running

    def setTcp(self, tcp_offset: list[float]) -> bool:
        c = self._send()
        if len(tcp_offset) != 6:
            raise RuntimeError(f"setTcp expects 6 values, got {len(tcp_offset)}")
        c.tcp_offset = [float(v) for v in tcp_offset]
        return True

    def getTCPOffset(self) -> list[float]:
        return list(self._c.tcp_offset)

    # -- script and connection --

    def isProgramRunning(self) -> bool:
        return self._c.program_running

    def getRobotStatus(self) -> int:
        return self._c.robot_status()

    def reuploadScript(self) -> bool:
        return self._send().start_program()

    def reconnect(self) -> bool:
        if self._c.comm_lost:
            return False
        self._connected = True
        self._c.rtde_clients += 1
        return self._c.program_running or self._c.start_program()

    def disconnect(self) -> None:
        if self._live():
            self._c.stop_program()
        super().disconnect()


class RTDEReceiveInterface(_RTDEClient):
    """The output recipe of the last control cycle (stale while the link is down)."""

    def __init__(self, hostname: str, frequency: float = -1.0, variables: list[str] = (), verbose: bool = False,
                 use_upper_range_registers: bool = False, rt_priority: int = 0) -> None:
        super().__init__(hostname, frequency)
        self._last = self._c.received

    def _data(self):
        if self._live():
            self._last = self._c.received
        return self._last

    def getTimestamp(self) -> float:
        return self._data().timestamp_s

    def getActualQ(self) -> list[float]:
        return list(self._data().q_rad)

    def getActualQd(self) -> list[float]:
        return list(self._data().dq_rad_per_s)

    def getActualTCPPose(self) -> list[float]:
        return list(self._data().tcp_pose)

    def getActualTCPSpeed(self) -> list[float]:
        return list(self._data().tcp_speed)

    def getActualTCPForce(self) -> list[float]:
        return list(self._data().tcp_force)

    def getSafetyStatusBits(self) -> int:
        return self._c.safety_status_bits()

    def getSafetyMode(self) -> int:
        return self._c.safety_mode()

    def getRobotMode(self) -> int:
        return self._c.robot_mode()

    def getRobotStatus(self) -> int:
        return self._c.robot_status()

    def getRuntimeState(self) -> int:
        return 2 if self._c.program_running else 1  # 2 playing, 1 stopped

    def isProtectiveStopped(self) -> bool:
        return self._c.protective_stop

    def isEmergencyStopped(self) -> bool:
        return self._c.estop_pressed

    def reconnect(self) -> bool:
        if self._c.comm_lost:
            return False
        self._connected = True
        return True


class DashboardClient:
    """The dashboard server (port 29999): connection, remote control, stops, power and brakes."""

    def __init__(self, hostname: str, port: int = DASHBOARD_PORT, verbose: bool = False) -> None:
        self._host, self._port = hostname, port
        self._c: SimulatedURController | None = None

    def connect(self, timeout_ms: int = 2000) -> None:
        try:
            self._c = _reach(self._host, self._port)
        except RuntimeError:
            raise RuntimeError("Timeout connecting to UR dashboard server.") from None

    def _ctl(self) -> SimulatedURController:
        if self._c is None:
            raise RuntimeError("Please connect to the dashboard server first")
        return self._c

    def isConnected(self) -> bool:
        return self._c is not None

    def disconnect(self) -> None:
        self._c = None

    def isInRemoteControl(self) -> bool:
        return self._ctl().remote_control

    def unlockProtectiveStop(self) -> None:
        self._ctl().unlock_protective_stop()

    def closeSafetyPopup(self) -> None:
        self._ctl()

    def closePopup(self) -> None:
        self._ctl()

    def powerOn(self) -> None:
        self._ctl().power_on()

    def powerOff(self) -> None:
        c = self._ctl()
        c.stop_program()
        c.powered = False

    def brakeRelease(self) -> None:
        self._ctl().brake_release()

    def stop(self) -> None:
        self._ctl().stop_program()

    def robotmode(self) -> str:
        names = {3: "POWER_OFF", 5: "IDLE", 7: "RUNNING"}
        return f"Robotmode: {names.get(self._ctl().robot_mode(), 'UNKNOWN')}"

    def safetystatus(self) -> str:
        names = {1: "NORMAL", 3: "PROTECTIVE_STOP", 7: "ROBOT_EMERGENCY_STOP"}
        return f"Safetystatus: {names.get(self._ctl().safety_mode(), 'UNKNOWN')}"

    def polyscopeVersion(self) -> str:
        return "URSoftware 5.22.0 (robot_rl UR double)"

    def getRobotModel(self) -> str:
        return "UR5"


def _check_servo_args(time_s: float, lookahead_time_s: float, gain: float) -> None:
    """The controller's own range checks of servoL/servoJ's arguments."""
    if not 0.03 <= lookahead_time_s <= 0.2:
        raise RuntimeError(f"servo lookahead_time must be in [0.03, 0.2] s, got {lookahead_time_s}")
    if not 100 <= gain <= 2000:
        raise RuntimeError(f"servo gain must be in [100, 2000], got {gain}")
    if time_s < 0:
        raise RuntimeError(f"servo time must be >= 0, got {time_s}")
