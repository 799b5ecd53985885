"""Typed exceptions of robot_rl: catch by type, never by message text."""

from __future__ import annotations


class RobotRLError(Exception):
    """Base class of every error robot_rl raises on purpose."""


class ConfigError(RobotRLError, ValueError):
    """A config, task spec or CLI value is invalid; the message names the field and the limit."""


class ProtocolError(RobotRLError):
    """A wire message could not be decoded or failed validation.

    `code` is a short machine-readable reason that the server copies into its error reply.
    """

    def __init__(self, message: str, *, code: str = "bad_message") -> None:
        super().__init__(message)
        self.code = code


class ProtocolVersionMismatch(ProtocolError):
    """The peer speaks another protocol version."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="protocol_version_mismatch")


class SafetyViolation(RobotRLError):
    """A command was refused because it would break a robot-PC safety limit (box, step, finite)."""

    def __init__(self, message: str, *, code: str = "unsafe_command") -> None:
        super().__init__(message)
        self.code = code


class BridgeTimeout(RobotRLError, TimeoutError):
    """No reply from the robot server within the deadline."""


class BridgeRemoteError(RobotRLError):
    """The robot server answered a request with an error reply."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class DeviceNotFound(RobotRLError):
    """A camera, arm or input device is not connected (or not visible to this machine)."""


class DependencyMissing(RobotRLError, ImportError):
    """An optional Python package needed for this backend is not installed."""
