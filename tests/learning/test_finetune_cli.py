"""End to end through the CLI on the twin: record demos, `robot-rl train-bc`, then
`robot-rl finetune` with every method on tiny budgets (mechanics, not learning: the benchmarks
learn). Real processes, real files, the real twin."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from robot_rl.agents.diffusion_checkpoint import load_base
from robot_rl.data.episodes import iter_episodes
from robot_rl.learning.metrics import read_metrics

ENV = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}


def robot_rl(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robot_rl.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def last_json(out: subprocess.CompletedProcess) -> dict:
    """The command's JSON result: its only stdout line (progress bars belong on stderr)."""
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout[-3000:]
    return json.loads(lines[0])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("bc")
    last_json(robot_rl("record", "--task", "pick_cube", "--episodes", "2", "--out", str(root / "demos"), "--no-images"))
    result = last_json(robot_rl("train-bc", "--demos", str(root / "demos"), "--diffusion.steps", "40",
                                "--diffusion.hidden", "64", "--diffusion.blocks", "1", "--eval-episodes", "2",
                                "--out", str(root / "base.pt")))
    assert result["task"] == "pick_cube" and result["steps"] == 40 and result["eval_episodes"] == 2
    return root / "base.pt"


@pytest.mark.slow
def test_train_bc_writes_a_self_describing_frozen_checkpoint(base):
    loaded = load_base(base)
    assert loaded.task == "pick_cube" and loaded.train["task"] == "pick_cube" and loaded.policy.cfg.hidden == 64
    assert not any(p.requires_grad for p in loaded.policy.parameters()) and not loaded.policy.training
    assert loaded.layout.state[0][0][0] != "base_action"
    assert loaded.extra["evaluation"]["episodes"] == 2
    obs = {"state": torch.zeros(1, loaded.policy.cfg.obs_horizon, loaded.layout.state_dim)}
    noise = torch.randn(1, *loaded.policy.chunk_shape)
    assert torch.equal(loaded.policy.sample(obs, noise), load_base(base).policy.sample(obs, noise))


@pytest.mark.slow
def test_eval_of_a_base_replays_its_train_bc_evaluation(base, tmp_path):
    evaluation = load_base(base).extra["evaluation"]  # train-bc evaluated with seed 0 + 1000
    out = last_json(robot_rl("eval", "--checkpoint", str(base), "--episodes", "2", "--seed", "1000"))
    assert out["method"] == "diffusion-bc" and out["episodes"] == 2
    assert (out["success_rate"], out["mean_steps"]) == (evaluation["success_rate"], evaluation["mean_steps"])
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "y.pt")
    for bad in ("x.pt", "y.pt"):
        wrong = robot_rl("eval", "--checkpoint", str(tmp_path / bad))
        assert wrong.returncode != 0 and "Traceback" not in wrong.stderr, wrong.stderr[-2000:]


def test_load_base_explains_a_wrong_file(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    out = robot_rl("finetune", "--base", str(tmp_path / "missing.pt"))
    assert out.returncode == 2 and "train-bc" in out.stderr


@pytest.mark.parametrize("method, extra", [
    ("dsrl-sac", ["--dsrl.learning-starts", "2"]),
    ("dsrl-na", ["--dsrl.learning-starts", "2"]),
    ("residual-ppo", ["--ppo.num-envs", "2", "--ppo.rollout-steps", "16"]),
    ("residual-sac", ["--learning-starts", "20", "--enable-over-episodes", "3"]),
])
@pytest.mark.slow
def test_finetune_runs_every_method_and_logs_evaluations(base, tmp_path, method, extra):
    out = robot_rl("finetune", "--base", str(base), "--method", method, "--env-steps", "64", "--eval-every", "1000",
                   "--eval-episodes", "1", "--runs-dir", str(tmp_path), "--run", "r", *extra)
    result = last_json(out)
    assert result["method"] == method and result["env_steps"] >= 64
    evals = read_metrics(tmp_path / "r", "eval")
    assert evals and evals[-1]["env_step"] >= 64 and evals[-1]["episodes"] == 1
    assert result["evals"][-1]["success_rate"] == evals[-1]["success_rate"]
    if method != "residual-sac":  # `robot-rl eval` of the run replays its last evaluation (same reset seeds)
        seed = str(10_000 + evals[-1]["env_step"])  # FinetuneConfig.seed 0 + 10 000 + step, as the run did
        for checkpoint in (tmp_path / "r", tmp_path / "r" / "final.pt"):
            replay = last_json(robot_rl("eval", "--checkpoint", str(checkpoint), "--episodes", "1", "--seed", seed))
            assert replay["method"] == method and replay["env_steps"] == result["env_steps"]
            assert (replay["success_rate"], replay["mean_steps"]) == (evals[-1]["success_rate"], evals[-1]["mean_steps"])
    if method == "residual-sac":  # progressive enabling: episode 0 runs the base alone, stored as zero residuals
        from robot_rl.learning import wire
        from robot_rl.learning.step_log import StepLog

        steps = [wire.decode(f) for f in StepLog(tmp_path / "r" / "replay").replay()]
        first = [m.action for m in steps if m.episode == 0]
        assert first and all(not np.any(a) for a in first)  # not the actor's (random, non-zero) samples


@pytest.mark.slow
def test_bench_finetune_reuse_keeps_finished_runs_resumes_interrupted_ones_and_redoes_the_rest(base, tmp_path):
    common = ("--base", str(base), "--eval-every", "1000", "--eval-episodes", "1", "--dsrl.learning-starts", "2",
              "--runs-dir", str(tmp_path))
    args = ("bench", "finetune", *common, "--method", "dsrl-sac", "--seeds", "1", "--steps", "48", "--json")
    first = last_json(robot_rl(*args))
    runs = [tmp_path / f"pick_cube_dsrl-sac_seed{i}" / "metrics.jsonl" for i in range(3)]
    finished = runs[0].read_text()
    # Seed 1 stopped at 24 env steps with a checkpoint; seed 2 died before its first checkpoint.
    last_json(robot_rl("finetune", *common, "--method", "dsrl-sac", "--env-steps", "24", "--seed", "1",
                       "--run", "pick_cube_dsrl-sac_seed1"))
    partial = runs[1].read_text()
    runs[2].parent.mkdir()
    runs[2].write_text('{"kind": "eval", "env_step": 0, "wall_s": 1.0, "success_rate": 0.5}\n')
    three = list(args)
    three[three.index("--seeds") + 1] = "3"
    second = last_json(robot_rl(*three, "--reuse"))
    assert runs[0].read_text() == finished  # not run again
    stretch = [e["env_step"] for e in read_metrics(runs[1].parent, "eval")]
    assert runs[1].read_text().startswith(partial)  # resumed: its first stretch kept ...
    assert len(stretch) == 3 and stretch[0] == 0 and 24 <= stretch[1] < 48 <= stretch[2]  # ... and continued
    assert all(e["success_rate"] != 0.5 for e in read_metrics(runs[2].parent, "eval"))  # started over
    assert read_metrics(runs[2].parent, "eval")[-1]["env_step"] >= 48
    seeds = second["methods"]["dsrl-sac"]["seeds"]
    assert seeds[0] == first["methods"]["dsrl-sac"]["seeds"][0] | {"wall_min": seeds[0]["wall_min"]}
    assert list(seeds[1]["success_by_step"]) == [str(step) for step in stretch]
    # --report-only with a fourth seed that never ran: reports the three finished ones, runs nothing.
    three[three.index("--seeds") + 1] = "4"
    report = last_json(robot_rl(*three, "--report-only"))
    assert report["methods"]["dsrl-sac"]["seeds_reported"] == 3
    assert not (tmp_path / "pick_cube_dsrl-sac_seed3").exists()


@pytest.mark.slow
def test_dsrl_reports_the_success_rate_of_its_training_episodes(base):
    from robot_rl.finetune.dsrl import DSRLConfig, train_dsrl
    from robot_rl.envs.make import base_env
    from robot_rl.envs.noise_action import NoiseActionEnv
    from robot_rl.learning.policy import success_of

    loaded = load_base(base)
    env = NoiseActionEnv(base_env(loaded, "pick_cube"), loaded.policy, loaded.layout, bound=1.5, seed=0)
    ended: list[bool] = []  # what the env said, next to what the trainer reported
    step = env.step

    def recording_step(action):
        out = step(action)
        if out[2] or out[3]:
            ended.append(success_of(out[4], out[2], out[1]))
        return out

    env.step = recording_step
    seen: list[tuple[int, float]] = []
    try:
        train_dsrl(env, env, DSRLConfig(utd=1.0, learning_starts=2), variant="sac", env_steps=260, eval_every=10_000,
                   eval_episodes=0, seed=0, on_step=lambda s, m: seen.append((len(ended), m.get("train_success_rate"))))
    finally:
        env.close()
    assert len(ended) >= 2
    assert all(rate is None for n, rate in seen if n == 0)  # nothing to report before an episode ends
    for n, rate in seen:
        if n:
            assert rate == pytest.approx(np.mean(ended[:n][-50:]))


@pytest.mark.parametrize(("variant", "per_chunk"), [("sac", 20), ("na", 4)])
@pytest.mark.slow
def test_dsrl_updates_per_chunk_default_to_the_variants_setting(base, variant, per_chunk):
    from robot_rl.finetune.dsrl import DSRLConfig, train_dsrl
    from robot_rl.envs.make import base_env
    from robot_rl.envs.noise_action import NoiseActionEnv

    loaded = load_base(base)
    env = NoiseActionEnv(base_env(loaded, "pick_cube"), loaded.policy, loaded.layout, bound=1.5, seed=0)
    try:
        out = train_dsrl(env, env, DSRLConfig(learning_starts=2), variant=variant, env_steps=40, eval_every=10_000,
                         eval_episodes=0, seed=0)
    finally:
        env.close()
    # Updates start at the second chunk step; each chunk step after that adds `per_chunk`.
    assert out["chunk_steps"] >= 3
    assert out["updates"] == per_chunk * (out["chunk_steps"] - 1)


@pytest.mark.slow
def test_residual_ppo_executes_its_own_residual_scales(base, tmp_path, monkeypatch):
    """residual-ppo takes its scales from `--ppo.*`, not from the residual-sac agent's."""
    from robot_rl.finetune import run as finetune_run
    from robot_rl.finetune.ppo import PPOConfig
    from robot_rl.envs.residual import ResidualEnv

    executed: list[np.ndarray] = []  # |executed − base| in normalized units, per step
    step = ResidualEnv.step

    def recording_step(self, residual):
        base_n = self._base_n.copy()
        out = step(self, residual)
        executed.append(np.abs(self.to_normalized(out[4]["executed_action"]) - base_n))
        return out

    monkeypatch.setattr(ResidualEnv, "step", recording_step)
    cfg = finetune_run.FinetuneConfig(base=str(base), method="residual-ppo", env_steps=32, eval_every=1000,
                                      eval_episodes=0, runs_dir=str(tmp_path), run="r",
                                      ppo=PPOConfig(num_envs=1, rollout_steps=32, init_std=5.0,
                                                    residual_scale=0.05, residual_gripper_scale=1.0))
    finetune_run.run(cfg)
    moved = np.max(executed, axis=0)
    assert len(executed) >= 32
    assert np.all(moved[:-1] <= 0.05 + 1e-5) and moved[:-1].max() > 0.04  # wide noise saturates at the scale
    assert moved[-1] > 0.5  # the gripper's scale is 1.0


@pytest.mark.slow
def test_residual_ppo_in_worker_processes_learns_exactly_what_it_learns_in_process(base, tmp_path):
    """--ppo.async-envs steps each twin in its own process; the envs keep their seeds, so the
    rollouts and hence the trained residual are the same as with every env in this process."""
    from robot_rl.finetune import run as finetune_run
    from robot_rl.finetune.ppo import PPOConfig

    models = {}
    for async_envs in (False, True):
        cfg = finetune_run.FinetuneConfig(base=str(base), method="residual-ppo", env_steps=64, eval_every=1000,
                                          eval_episodes=0, runs_dir=str(tmp_path), run=f"async{async_envs}",
                                          ppo=PPOConfig(num_envs=2, rollout_steps=16, async_envs=async_envs))
        result = finetune_run.run(cfg)
        assert result["env_steps"] == 64
        models[async_envs] = torch.load(tmp_path / cfg.run / "final.pt", weights_only=False)["model"]
    assert models[False].keys() == models[True].keys()
    last = max((k for k in models[False] if k.startswith("actor.") and k.endswith(".weight")),
               key=lambda k: int(k.split(".")[1]))
    assert models[False][last].abs().max() > 0  # the zero-initialized output layer was trained
    for k in models[False]:
        assert torch.equal(models[False][k], models[True][k]), k


def _kill_after_checkpoint(args: list[str], run_dir, *, env_steps: int) -> None:
    """Start `robot-rl finetune *args` on a large budget and kill -9 it once its latest checkpoint
    is past `env_steps`."""
    import signal
    import time

    from robot_rl.learning.checkpoints import latest_checkpoint_path

    proc = subprocess.Popen([sys.executable, "-m", "robot_rl.cli.main", "finetune", *args, "--env-steps", "100000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    deadline = time.monotonic() + 240
    while (latest_checkpoint_path(run_dir) is None or
           torch.load(latest_checkpoint_path(run_dir), weights_only=True)["env_steps"] < env_steps):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, f"no checkpoint past {env_steps} env steps in 240 s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_residual_ppo_killed_mid_run_resumes_from_its_checkpoint(base, tmp_path):
    """kill -9 a residual-ppo run once it has checkpointed, then `--resume`: training continues
    from the saved env step and optimizer state, and reaches the budget."""
    from robot_rl.learning.checkpoints import latest_checkpoint_path

    args = ["--base", str(base), "--method", "residual-ppo", "--eval-every", "1000000", "--eval-episodes", "1",
            "--ppo.num-envs", "2", "--ppo.rollout-steps", "16", "--checkpoint-every", "32",
            "--runs-dir", str(tmp_path), "--run", "r"]
    _kill_after_checkpoint(args, tmp_path / "r", env_steps=64)
    saved = torch.load(latest_checkpoint_path(tmp_path / "r"), weights_only=True)
    saved_step = saved["env_steps"]
    updates_per_rollout = 4 * 4  # epochs × minibatches (PPOConfig defaults)
    adam_steps = int(next(iter(saved["optimizer"]["state"].values()))["step"])
    assert adam_steps == updates_per_rollout * saved_step // 32

    without = robot_rl("finetune", *args, "--env-steps", str(saved_step + 64))
    assert without.returncode == 2 and "--resume" in without.stderr  # never overwrites a run silently
    result = last_json(robot_rl("finetune", *args, "--env-steps", str(saved_step + 64), "--resume"))
    assert result["env_steps"] == saved_step + 64
    final = torch.load(latest_checkpoint_path(tmp_path / "r"), weights_only=True)
    assert final["env_steps"] == saved_step + 64
    assert int(next(iter(final["optimizer"]["state"].values()))["step"]) == adam_steps + 2 * updates_per_rollout
    train = read_metrics(tmp_path / "r", "train")
    assert [m["env_step"] for m in train if m["env_step"] > saved_step][-2:] == [saved_step + 32, saved_step + 64]
    evals = read_metrics(tmp_path / "r", "eval")
    assert evals[0]["env_step"] == 0 and evals[-1]["env_step"] == saved_step + 64


@pytest.mark.slow
def test_dsrl_killed_mid_run_resumes_with_its_replay_networks_and_counters(base, tmp_path):
    """kill -9 a DSRL-NA run once it has checkpointed, then `--resume`: the replay comes back row
    for row and grows from there, the optimizers continue their step counts, and the run reaches
    its budget without evaluating step 0 again."""
    from robot_rl.learning.checkpoints import latest_checkpoint_path

    args = ["--base", str(base), "--method", "dsrl-na", "--eval-every", "1000000", "--eval-episodes", "1",
            "--dsrl.learning-starts", "2", "--checkpoint-every", "32", "--runs-dir", str(tmp_path), "--run", "r"]
    _kill_after_checkpoint(args, tmp_path / "r", env_steps=64)
    saved = torch.load(latest_checkpoint_path(tmp_path / "r"), weights_only=True)
    rows = saved["chunk_steps"]
    assert saved["replay"]["written"] == rows == saved["replay"]["obs"].shape[0] and rows >= 8  # 8-step chunks
    assert saved["updates"] == 4 * (rows - 1) and saved["action_critic"] is not None  # 4 per chunk from the 2nd
    critic_steps = int(next(iter(saved["optimizers"]["action_critic"]["state"].values()))["step"])
    assert critic_steps == saved["updates"]

    without = robot_rl("finetune", *args, "--env-steps", str(saved["env_steps"] + 64))
    assert without.returncode == 2 and "--resume" in without.stderr  # never overwrites a run silently
    result = last_json(robot_rl("finetune", *args, "--env-steps", str(saved["env_steps"] + 64), "--resume"))
    assert result["env_steps"] >= saved["env_steps"] + 64
    final = torch.load(latest_checkpoint_path(tmp_path / "r"), weights_only=True)
    assert final["env_steps"] == result["env_steps"] and final["chunk_steps"] > rows
    for key in ("obs", "next_obs", "action", "executed", "reward", "mask"):  # the saved rows, then new ones
        assert torch.equal(final["replay"][key][:rows], saved["replay"][key]), key
    assert final["updates"] > saved["updates"]
    assert int(next(iter(final["optimizers"]["action_critic"]["state"].values()))["step"]) == final["updates"]
    evals = read_metrics(tmp_path / "r", "eval")
    assert [e["env_step"] for e in evals] == [0, result["env_steps"]]  # step 0 from the first process only
    assert [e["env_step"] for e in result["evals"]] == [0, result["env_steps"]]


@pytest.mark.slow
def test_residual_sac_fills_its_demo_buffer_with_the_demos_as_residuals(base, tmp_path):
    demos = base.parent / "demos"  # the episodes the base was trained on
    out = robot_rl("finetune", "--base", str(base), "--method", "residual-sac", "--demos", str(demos),
                   "--learning-starts", "20", "--env-steps", "48", "--eval-every", "1000", "--eval-episodes", "1",
                   "--runs-dir", str(tmp_path), "--run", "r")
    result = last_json(out)
    recorded = sum(len(ep) for ep in iter_episodes(demos))
    assert result["env_steps"] >= 48 and result["demo_transitions"] == recorded
    assert 0.0 <= result["demo_residual_clipped"] <= 1.0
    wrong = robot_rl("finetune", "--base", str(base), "--method", "dsrl-sac", "--demos", str(demos))
    assert wrong.returncode == 2 and "--demos fills residual-sac" in wrong.stderr


@pytest.mark.slow
def test_bench_residual_sac_learns_with_the_bases_own_demos_under_its_own_run_name(base, tmp_path):
    common = ("bench", "finetune", "--base", str(base), "--method", "residual-sac", "--seeds", "1", "--steps", "48",
              "--eval-every", "1000", "--eval-episodes", "1", "--runs-dir", str(tmp_path), "--json")
    report = last_json(robot_rl(*common))["methods"]["residual-sac"]
    assert report["demos"] == str(base.parent / "demos") and report["seeds_reported"] == 1
    run = tmp_path / "pick_cube_residual-sac-demos_seed0"
    assert read_metrics(run, "eval")[-1]["env_step"] >= 48
    assert json.loads((run / "config.json").read_text())["demos"] == str(base.parent / "demos")
    # Runs without the demos are another experiment: never reported as these.
    plain = robot_rl(*common, "--no-residual-demos", "--report-only")
    assert plain.returncode == 2 and "no finished runs" in plain.stderr and "pick_cube_residual-sac_seed<i>" in plain.stderr


@pytest.mark.slow
def test_residual_sac_resume_continues_the_distributed_run(base, tmp_path):
    args = ["finetune", "--base", str(base), "--method", "residual-sac", "--learning-starts", "20",
            "--eval-every", "1000", "--eval-episodes", "1", "--runs-dir", str(tmp_path), "--run", "r"]
    first = last_json(robot_rl(*args, "--env-steps", "64"))
    second = last_json(robot_rl(*args, "--env-steps", "128", "--resume"))
    assert first["env_steps"] >= 64 and second["env_steps"] >= 128
    assert [e["env_step"] for e in second["evals"]][0] == first["evals"][-1]["env_step"]  # the first run's evaluation kept
