"""`robot-rl train`'s progress: the status the learner keeps, its two renderings, and what a real
run prints on a normal start (subprocess, piped)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time

import pytest

from robot_rl.learning import progress
from robot_rl.learning.progress import ProgressView, RunStatus


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_status_derives_rates_eta_success_and_interventions(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    s = RunStatus("r", env_steps_total=1000)
    assert s.eta_s is None and s.recent_success is None and s.intervention_share is None
    for i in range(11):  # 10 env steps/s and 20 updates/s for 10 s
        s.on_counters(env_steps=10 * i, updates=20 * i, update_budget=20 * i + 5)
        clock.t += 1.0
    assert s.env_steps_per_s == pytest.approx(10.0) and s.updates_per_s == pytest.approx(20.0)
    assert s.eta_s == pytest.approx((1000 - 100) / 10.0)
    assert s.updates_behind == 5
    s.on_episode({"success": True, "return": 1.0, "interventions": 5, "length": 10})
    s.on_episode({"success": False, "return": 0.0, "interventions": 0, "length": 30})
    assert s.recent_success == 0.5 and s.recent_return == 0.5
    assert s.intervention_share == pytest.approx(5 / 40)
    s.on_eval(100, 0.25)
    line = s.line()
    for part in ("env steps 100/1000 (10 %)", "ETA 1m30s", "train success 0.50", "eval 0.25 @ 100",
                 "20.0/s", "2.00/env step", "interventions 12 %", "learner behind 5 updates"):
        assert part in line, (part, line)


def test_rates_cover_a_trailing_window_only(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    s = RunStatus("r", env_steps_total=10_000)
    for i in range(120):  # 100 steps/s for a minute, then 10 steps/s for a minute
        s.on_counters(env_steps=100 * min(i, 60) + 10 * max(0, i - 60), updates=0, update_budget=0)
        clock.t += 1.0
    assert s.env_steps_per_s == pytest.approx(10.0, rel=0.05)


def test_lines_mode_prints_on_phase_changes_periodically_and_at_the_end():
    s = RunStatus("run_x", env_steps_total=100)
    out = io.StringIO()
    with ProgressView(s, stream=out, live=False, line_every_s=0.3):
        s.set_phase("waiting for the actor to start")
        time.sleep(0.4)
        s.set_phase("training")
        s.on_counters(50, 10, 10)
        time.sleep(1.0)  # ≥ 2 periodic lines
    lines = out.getvalue().splitlines()
    assert all(re.match(r"^\[\d\d:\d\d:\d\d\] run_x: ", line) for line in lines), lines
    assert any("waiting for the actor to start" in line for line in lines)
    training = [line for line in lines if "run_x: training" in line]
    assert len(training) >= 3  # the change, periodic lines, the final one
    assert "env steps 50/100 (50 %)" in lines[-1]


def test_live_mode_renders_the_panel():
    s = RunStatus("run_y", env_steps_total=200)
    out = io.StringIO()
    with ProgressView(s, stream=out, live=True):
        s.set_phase("training")
        s.on_counters(80, 40, 40)
        s.on_eval(50, 0.5)
        time.sleep(0.7)
    text = out.getvalue()
    for part in ("env steps", "80/200", "run_y — training", "latest evaluation", "success 0.50 at 50 env steps",
                 "actor/learner lag"):
        assert part in text, part


def robot_rl(*args: str, timeout: float = 600.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robot_rl.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_a_config_error_of_the_actor_surfaces_before_anything_is_spawned(tmp_path):
    out = robot_rl("train", "--env", "Pendulum-v1", "--intervention", "scripted", "--runs-dir", str(tmp_path),
                   timeout=120)
    assert out.returncode == 2, out.stderr
    assert "--intervention scripted needs a twin task" in out.stderr and "--env Pendulum-v1" in out.stderr
    assert list(tmp_path.iterdir()) == []  # no run folder, no actor config: nothing started
    assert "actor process exited" not in out.stderr
    out = robot_rl("train", "--task", "pick_cube", "--classifier", str(tmp_path / "missing.pt"), "--runs-dir",
                   str(tmp_path), timeout=120)
    assert out.returncode == 2 and "missing.pt does not exist" in out.stderr, out.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_piped_run_prints_status_lines_and_no_warnings_on_a_normal_start(tmp_path):
    """The README's command 1 in small: a state run on pick_cube with the scripted intervener,
    torch.compile on (the learner's first update compiles for a while: the actor must not call
    that a silent learner)."""
    out = robot_rl("train", "--task", "pick_cube", "--intervention", "scripted", "--env-steps", "400",
                   "--learning-starts", "150", "--eval-every", "400", "--eval-episodes", "1", "--runs-dir",
                   str(tmp_path), "--run", "piped")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["env_steps"] == 400
    assert "WARNING" not in out.stderr and "silent" not in out.stderr, out.stderr
    status = [line for line in out.stderr.splitlines() if re.match(r"^\[\d\d:\d\d:\d\d\] piped: ", line)]
    phases = " / ".join(status)
    for phase in ("waiting for the actor to start", "collecting 150 env steps before updates start", "training"):
        assert phase in phases, phases
    assert "env steps 400/400 (100 %)" in status[-1]


@pytest.mark.slow
def test_ctrl_c_stops_a_run_with_a_hint_not_a_traceback(tmp_path):
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "robot_rl.cli.main", "train", "--task", "pick_cube",
                             "--env-steps", "100000", "--runs-dir", str(tmp_path), "--run", "stopped"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:  # wait until the run is under way
        lines.append(line)
        if "collecting" in line:
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    err = "".join(lines) + rest
    assert proc.returncode == 130, err
    assert "robot-rl train: interrupted (continue it with the same command and --resume)" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert (tmp_path / "stopped" / "config.json").is_file()
