"""The robot bridge: wire protocol, request service, ZeroMQ server and client (both ends import protocol.py)."""
