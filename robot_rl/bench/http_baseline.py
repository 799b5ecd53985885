"""The SERL-style baseline: a robot server over HTTP/JSON, one step = 3 sequential requests.

SERL's robot server is a Flask app; each 10 Hz env step calls `requests.post` three times in a
row (clear errors, send the pose, get the state), each on a new connection (no session). This
module serves the same three routes with Flask and makes the same calls, so
`robot-rl bench bridge` can time that pattern beside the ZeroMQ bridge on the same machine.

    python -m robot_rl.bench.http_baseline PORT
"""

from __future__ import annotations

import sys

import numpy as np

_STATE = {
    "pose": [0.5, 0.0, 0.2, 0.0, 1.0, 0.0, 0.0], "vel": [0.0] * 6, "force": [0.0] * 3, "torque": [0.0] * 3,
    "q": [0.0] * 7, "dq": [0.0] * 7, "jacobian": np.zeros((6, 7)).tolist(), "gripper_pos": 0.04,
}


def serve(port: int) -> None:
    import logging

    from flask import Flask, jsonify, request

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = Flask("serl_style_robot_server")

    @app.post("/clearerr")
    def clear():
        return "Clear"

    @app.post("/pose")
    def pose():
        _STATE["pose"] = [float(v) for v in request.json["arr"]]
        return "Moved"

    @app.post("/getstate")
    def getstate():
        return jsonify(_STATE)

    app.run(host="127.0.0.1", port=port, threaded=True)


def serl_step(url: str, pose: list[float]) -> dict:
    """One SERL env step: clear errors, send the pose, read the state: 3 `requests.post` calls."""
    import requests

    requests.post(url + "clearerr", timeout=5)
    requests.post(url + "pose", json={"arr": pose}, timeout=5)
    return requests.post(url + "getstate", timeout=5).json()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
