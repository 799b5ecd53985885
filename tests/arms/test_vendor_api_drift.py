"""The vendor-API doubles against the real wheels `.ci/install` puts here (pylibfranka, ur_rtde).

The backends call the vendor modules only through names the doubles provide (tests/arms drives
them through the doubles), so a double that offers a name, a member or a signature the real
module lacks is the only way a backend could call something that does not exist. Each check
fails naming the member and the real signatures.
"""

from __future__ import annotations

import enum
import importlib
import inspect

import pytest
from vendor_api import real_overloads, signature_mismatch

from robot_rl.twin.doubles import pylibfranka as franka_double
from robot_rl.twin.doubles import ur_rtde as ur_double

pylibfranka = pytest.importorskip("pylibfranka", reason="the franka extra is not installed (.ci/install installs it)")
rtde_control = pytest.importorskip("rtde_control", reason="the ur extra is not installed (.ci/install installs it)")
rtde_receive = importlib.import_module("rtde_receive")
dashboard_client = importlib.import_module("dashboard_client")

PAIRS = [(pylibfranka, name, getattr(franka_double, name)) for name in franka_double.VENDOR_NAMES] + [
    (rtde_control, "RTDEControlInterface", ur_double.RTDEControlInterface),
    (rtde_receive, "RTDEReceiveInterface", ur_double.RTDEReceiveInterface),
    (dashboard_client, "DashboardClient", ur_double.DashboardClient),
]


def _public_members(cls: type) -> dict[str, object]:
    """What a double class offers: its methods and class attributes (own and inherited from
    other double classes), its `__slots__`, and attributes a no-argument instance sets."""
    members = {}
    for klass in reversed(cls.__mro__):
        if klass is object or klass.__module__ == "builtins" or issubclass(object, klass):
            continue
        if issubclass(klass, (BaseException, enum.Enum)) and klass.__module__ != cls.__module__:
            continue
        for name, value in vars(klass).items():
            if not name.startswith("_"):
                members[name] = value
        for name in getattr(klass, "__slots__", ()):
            if not name.startswith("_"):
                members[name] = None
    try:
        instance = cls() if not issubclass(cls, (BaseException, enum.Enum)) else None
    except TypeError:
        instance = None
    if instance is not None:
        for name in getattr(instance, "__dict__", {}):
            if not name.startswith("_"):
                members.setdefault(name, None)
    return members


@pytest.mark.parametrize("real_module, name, double", PAIRS, ids=[f"{m.__name__}.{n}" for m, n, _ in PAIRS])
def test_double_offers_only_what_the_real_module_has(real_module, name, double):
    assert hasattr(real_module, name), f"{real_module.__name__} has no {name}"
    real = getattr(real_module, name)
    if isinstance(double, type) and issubclass(double, BaseException):
        assert isinstance(real, type) and issubclass(real, BaseException), f"{name} is not an exception in the real module"
        return
    problems = []
    if isinstance(double, type) and issubclass(double, enum.Enum):
        for member in double:
            if not hasattr(real, member.name):
                problems.append(f"{name}.{member.name} does not exist")
        assert not problems, "; ".join(problems)
        return
    if "__init__" in vars(double):
        why = signature_mismatch(real.__init__, double.__init__)
        if why:
            problems.append(f"{name}(): {why}")
    for member, value in _public_members(double).items():
        if not hasattr(real, member):
            problems.append(f"{name}.{member} does not exist in {real_module.__name__}")
            continue
        real_member = getattr(real, member)
        if inspect.isfunction(value) and callable(real_member) and not isinstance(real_member, type):
            why = signature_mismatch(real_member, value)
            if why:
                problems.append(f"{name}.{member}{why}")
    assert not problems, "\n".join(problems)


def test_the_drift_check_catches_a_wrong_signature_and_a_missing_name():
    """The check itself: a double method with an extra keyword, one with a wrong name, and one the
    real class does not have are all reported."""

    class Control:
        def directTorque(self, torque, viscous_scale=None, coulomb_scale=None, friction=None):
            ...

        def servoL(self, pose, speed, acceleration, time, lookahead_time, gain):  # arg0..arg5: any names
            ...

        def setWatchdog(self, frequency=10.0):  # real: min_frequency
            ...

    real = rtde_control.RTDEControlInterface
    assert signature_mismatch(real.directTorque, Control.directTorque)
    assert signature_mismatch(real.servoL, Control.servoL) is None
    assert "min_frequency" in signature_mismatch(real.setWatchdog, Control.setWatchdog)
    assert [p.name for p in real_overloads(real.directTorque)[0]] == ["torque", "viscous_scale", "coulomb_scale"]


def test_a_double_member_the_real_class_lacks_fails_the_check(monkeypatch):
    monkeypatch.setattr(ur_double.RTDEControlInterface, "directTorqueFast", lambda self, torque: True, raising=False)
    with pytest.raises(AssertionError, match="directTorqueFast does not exist"):
        test_double_offers_only_what_the_real_module_has(rtde_control, "RTDEControlInterface",
                                                         ur_double.RTDEControlInterface)
    monkeypatch.setattr(franka_double.Robot, "read_once", lambda self, timeout: None)
    with pytest.raises(AssertionError, match="read_once"):
        test_double_offers_only_what_the_real_module_has(pylibfranka, "Robot", franka_double.Robot)


def test_the_backends_reach_the_vendor_only_through_double_names():
    """Every `vendor.X` / `lib.X` attribute the backends use names something the doubles provide."""
    import re
    from pathlib import Path

    import robot_rl.arms as arms

    offered = set(franka_double.VENDOR_NAMES) | {"RTDEControlInterface", "RTDEReceiveInterface", "DashboardClient"}
    used = set()
    for path in Path(arms.__file__).parent.glob("*.py"):
        used |= set(re.findall(r"\b(?:vendor|lib|self\._lib|self\._vendor)(?:\.[a-z_]+)?\.([A-Z]\w*)", path.read_text()))
    assert used, "found no vendor attribute uses: the pattern no longer matches the backends' code"
    assert used <= offered, f"the backends use vendor names no double provides: {sorted(used - offered)}"
