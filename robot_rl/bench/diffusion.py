"""`robot-rl bench diffusion`: milliseconds per DDIM sample and per training step of the diffusion
BC policy on this CPU, with the one-exp Mish (`agents.diffusion.mish`) and with torch's
`F.mish`, repeats interleaved in one process so both see the same machine load.

DSRL-NA samples the frozen base twice per update (batch 256) and residual RL once per env step
(batch 1): the sample is the hot path of fine-tuning.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class DiffusionBench:
    """DDIM sample and training-step time (median of interleaved repeats), one-exp vs torch Mish."""

    state_dim: int = 32
    action_dim: int = 7
    batch_sizes: tuple[int, ...] = (1, 256)
    calls: int = 5
    """Calls per timed repeat."""
    repeats: int = 15
    threads: int = 1
    json: bool = False


def run(cfg: DiffusionBench) -> dict:
    import statistics

    import torch
    from torch.nn import functional as F

    import robot_rl.agents.diffusion as diffusion
    from robot_rl.agents.diffusion import DiffusionConfig, DiffusionPolicy

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(0)
    dcfg = DiffusionConfig()
    policy = DiffusionPolicy(cfg.state_dim, cfg.action_dim, dcfg)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    variants = {"one_exp": diffusion.mish, "torch": F.mish}
    ours = diffusion.mish

    def sample(b: int):
        obs = {"state": torch.randn(b, dcfg.obs_horizon, cfg.state_dim)}
        noise = torch.randn(b, *policy.chunk_shape)
        return lambda: policy.sample(obs, noise)

    def train_step():
        obs = {"state": torch.randn(256, dcfg.obs_horizon, cfg.state_dim)}
        actions = torch.rand(256, *policy.chunk_shape) * 2 - 1

        def step():
            loss = policy.loss(obs, actions)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    jobs = {f"sample_b{b}": sample(b) for b in cfg.batch_sizes} | {"train_step_b256": train_step()}
    times: dict[str, dict[str, list[float]]] = {j: {v: [] for v in variants} for j in jobs}
    try:
        for job, fn in jobs.items():
            for name, fn_mish in variants.items():  # warm-up
                diffusion.mish = fn_mish
                fn()
            for _ in range(cfg.repeats):
                for name, fn_mish in variants.items():
                    diffusion.mish = fn_mish
                    t0 = time.perf_counter()
                    for _ in range(cfg.calls):
                        fn()
                    times[job][name].append((time.perf_counter() - t0) / cfg.calls * 1e3)
    finally:
        diffusion.mish = ours
    # The same samples either way (the two agree within float32 rounding).
    obs = {"state": torch.randn(64, dcfg.obs_horizon, cfg.state_dim)}
    noise = torch.randn(64, *policy.chunk_shape)
    a = policy.sample(obs, noise)
    diffusion.mish = F.mish
    try:
        b = policy.sample(obs, noise)
    finally:
        diffusion.mish = ours
    out: dict = {"bench": "diffusion", "threads": cfg.threads, "hidden": dcfg.hidden, "blocks": dcfg.blocks,
                 "inference_steps": dcfg.inference_steps,
                 "max_abs_action_diff_normalized": round(float(
                     (policy.action_norm.normalize(a) - policy.action_norm.normalize(b)).abs().max()), 7)}
    for job, by in times.items():
        med = {name: statistics.median(ts) for name, ts in by.items()}
        out[f"{job}_ms"] = round(med["one_exp"], 3)
        out[f"{job}_torch_mish_ms"] = round(med["torch"], 3)
        out[f"{job}_speedup"] = round(med["torch"] / med["one_exp"], 2)
    return out
