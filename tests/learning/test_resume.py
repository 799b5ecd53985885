"""kill -9 the learner mid-run, restart it with --resume: every step the actor sent ends up in the
learner's persisted stream exactly once and unchanged, and training continues from the saved update."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from robot_rl.learning import wire
from robot_rl.learning.metrics import read_metrics
from robot_rl.learning.replay import EpisodeAssembler
from robot_rl.learning.step_log import StepLog
from robot_rl.learning.train import free_port_pair

ENV_STEPS = 1200


def spawn(role: str, run_root: Path, learner: str, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "robot_rl.cli.main", role, "--task", "peg_insertion", "--env-steps", str(ENV_STEPS),
            "--learning-starts", "50", "--eval-episodes", "0", "--checkpoint-every", "100", "--weights-every", "20",
            "--run", "resume_test", "--runs-dir", str(run_root), "--learner", learner, "--replay-capacity", "5000",
            *extra]
    log = open(run_root / f"{role}_{len(list(run_root.glob(role + '*.log')))}.log", "w")
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "ROBOT_RL_LOG": "INFO"})


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_learner_killed_and_resumed_loses_nothing(tmp_path):
    learner_addr = f"tcp://127.0.0.1:{free_port_pair()}"
    run = tmp_path / "resume_test"
    sent_log = tmp_path / "sent.jsonl"
    learner = spawn("learner", tmp_path, learner_addr)
    actor = spawn("actor", tmp_path, learner_addr, "--sent-log", str(sent_log))
    try:
        # Let it train past a checkpoint with steps persisted, then kill the learner hard.
        wait_for(lambda: (run / "checkpoints" / "latest").exists() and len(list((run / "replay").glob("chunk_*"))) >= 2,
                 240, "a checkpoint and two persisted chunks")
        time.sleep(1.0)
        os.killpg(learner.pid, signal.SIGKILL)
        learner.wait()
        killed_at = max(json.loads(line)["seq"] for line in sent_log.read_text().splitlines())
        time.sleep(3.0)  # the actor keeps acting alone and keeps what the learner has not persisted
        learner = spawn("learner", tmp_path, learner_addr, "--resume")
        assert actor.wait(timeout=600) == 0, (tmp_path / "actor_0.log").read_text()[-3000:]
        assert learner.wait(timeout=120) == 0, (tmp_path / "learner_1.log").read_text()[-3000:]
    finally:
        for p in (actor, learner):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    sent = {}
    for line in sent_log.read_text().splitlines():
        rec = json.loads(line)
        sent[rec["seq"]] = rec["digest"]
    assert sorted(sent) == list(range(ENV_STEPS))
    assert max(sent) > killed_at  # steps were sent after the learner came back
    persisted = {}
    for frames in StepLog(run / "replay").replay():
        msg = wire.decode(frames)
        assert msg.seq not in persisted, f"step {msg.seq} persisted twice"
        persisted[msg.seq] = hashlib.sha1(b"".join(bytes(f) for f in frames)).hexdigest()
    assert persisted == sent  # every step, exactly once, byte for byte
    # The rebuilt replay buffer holds one transition per step, in order.
    from robot_rl.learning.replay import FieldSpec, ReplayBuffer

    msgs = [wire.decode(f) for f in StepLog(run / "replay").replay()]
    buf = ReplayBuffer(ENV_STEPS, {"state": FieldSpec((msgs[0].next_state.shape[0],), "float32")}, 7)
    asm = EpisodeAssembler()
    for m in msgs:
        asm.step(buf, "a", None if m.obs_state is None else {"state": m.obs_state}, {"state": m.next_state}, m.action,
                 m.reward, terminated=m.terminated, truncated=m.truncated, seq=m.seq)
    np.testing.assert_array_equal(buf.transitions()["seq"], np.arange(ENV_STEPS))
    # Training resumed from the saved update, not from zero.
    log = (tmp_path / "learner_1.log").read_text()
    assert "resumed resume_test" in log
    resumed_update = int(log.split("update ", 1)[1].split(",", 1)[0])
    assert resumed_update >= 100 and resumed_update % 100 == 0
    after = [m["update"] for m in read_metrics(run, kind="train") if m["update"] > resumed_update]
    assert after and min(after) > resumed_update


@pytest.mark.slow
def test_resuming_a_finished_run_with_a_larger_budget_does_not_repeat_its_last_evaluation(tmp_path):
    def train(steps: int, *extra: str) -> None:
        out = subprocess.run([sys.executable, "-m", "robot_rl.cli.main", "train", "--task", "pick_cube",
                              "--env-steps", str(steps), "--eval-every", "200", "--eval-episodes", "1",
                              "--learning-starts", "10000", "--run", "r", "--runs-dir", str(tmp_path), *extra],
                             capture_output=True, text=True, timeout=280)
        assert out.returncode == 0, out.stderr[-3000:]

    train(200)  # ends with an evaluation at 200
    train(400, "--resume")  # its first episode ends near 300, before the next evaluation point
    points = [e["env_step"] // 200 for e in read_metrics(tmp_path / "r", kind="eval")]
    assert points == [1, 2], points


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # gone before or while reading (ESRCH mid-read)
        return False
    return state != "Z"


@pytest.mark.slow
def test_terminating_train_also_stops_its_actor(tmp_path):
    """The actor runs in its own session; a SIGTERM to `robot-rl train` must not leave it acting."""
    proc = subprocess.Popen([sys.executable, "-m", "robot_rl.cli.main", "train", "--task", "pick_cube",
                             "--env-steps", "100000", "--learning-starts", "100000", "--eval-episodes", "0",
                             "--no-compile", "--run", "r", "--runs-dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")

    def actor_pid() -> int | None:
        for pid in children.read_text().split():
            try:  # a short-lived child (e.g. a compiler probe) may exit between the listing and the read
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if _alive(int(pid)) else []
            except (FileNotFoundError, ProcessLookupError):
                continue
            if b"actor" in cmdline:
                return int(pid)
        return None

    actor = None
    try:
        wait_for(lambda: actor_pid() is not None, 120, "the actor")
        actor = actor_pid()
        wait_for(lambda: any((tmp_path / "r" / "replay").iterdir()), 120, "the actor's first steps")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) != 0
        wait_for(lambda: not _alive(actor), 20, "the actor to stop")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if actor is not None and _alive(actor):
            os.killpg(actor, signal.SIGKILL)


def test_steps_an_actor_lost_still_count_as_env_steps(tmp_path):
    """An actor that outlived its learner drops the steps it could not deliver; the restarted learner
    must count them (the actor does), else the actor's lead throttle and the learner's update
    budget wait for each other for ever."""
    from robot_rl.learning.config import TrainConfig
    from robot_rl.learning.learner import Learner

    port = free_port_pair()
    learner = Learner(TrainConfig(task="pick_cube", run="r", runs_dir=str(tmp_path), learner=f"tcp://127.0.0.1:{port}",
                                  eval_episodes=0, compile=False, learning_starts=0))
    try:
        learner._skip_lost(oldest_seq=300)  # the actor's oldest kept step is 300: 0..299 will never come
        assert learner.received_seq == 299 and learner.env_steps == 300
        assert learner._update_budget() == 300
        # The actor's throttle inverts the same budget: updates done up to it cover every counted step.
        assert learner.cfg.env_steps_covered(learner._update_budget()) == learner.env_steps
    finally:
        learner.close()
