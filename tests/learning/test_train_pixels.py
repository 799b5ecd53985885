"""`robot-rl train --obs pixels` end to end on the twin, briefly: frames through the bridge, frozen
backbone embeddings stored once per frame, updates, weights back to the actor, a checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from robot_rl.learning.metrics import read_metrics


@pytest.mark.timeout(300)
@pytest.mark.slow
def test_pixel_run_with_frozen_encoder_trains_and_checkpoints(tmp_path):
    steps = 80
    out = subprocess.run([sys.executable, "-m", "robot_rl.cli.main", "train", "--task", "pick_cube", "--obs", "pixels",
                          "--encoder.name", "small_cnn", "--encoder.frozen", "--encoder.pool", "avg",
                          "--encoder.out-dim", "64", "--env-steps", str(steps), "--learning-starts", "40",
                          "--eval-episodes", "0", "--checkpoint-every", "20", "--log-every", "10", "--runs-dir", str(tmp_path),
                          "--run", "px"], capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["env_steps"] == steps and summary["online_transitions"] == steps
    assert summary["updates"] >= 20
    train = read_metrics(tmp_path / "px", "train")
    assert train and all(torch.isfinite(torch.tensor(m["critic_loss"])) for m in train)
    names = sorted(p.name for p in (tmp_path / "px" / "checkpoints").iterdir())
    assert any(n.startswith("ckpt_") for n in names), names
    # The checkpoint rebuilds the pixel agent; the actor's weights carry the trainable head, not the frozen backbone.
    from robot_rl.learning.evaluate import load_agent
    from robot_rl.learning.policy import acting_state

    state, cfg = load_agent(tmp_path / "px")
    assert cfg.obs == "pixels" and cfg.encoder.frozen
    from robot_rl.envs.actions import action_dim_of
    from robot_rl.envs.make import make_env
    from robot_rl.learning.config import make_agent

    env = make_env(cfg.env_config(), render_images=True)
    try:
        agent = make_agent(cfg, cfg.layout_of(env), action_dim_of(env))
    finally:
        env.close()
    agent.load_state_dict(state["agent"])
    sent = acting_state(agent)
    assert any(".projection." in k for k in sent) and not any(".backbone." in k for k in sent)
