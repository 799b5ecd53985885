"""`robot-rl bench learner`: milliseconds per SAC update on this CPU (state observations).

The configuration the issue names: batch 256, 10 critics (target: min over a random 2),
256×256 MLPs with LayerNorm, one critic update and one actor update per update. HIL-SERL's
2-critic set is measured beside it in the same run, and so are the 10-critic set with glibc's
default allocator thresholds (robot_rl.cpu.keep_freed_memory: why) and with bfloat16 matmuls.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class LearnerBench:
    """SAC update time (median of repeats) for the 10-critic RLPD set and the 2-critic set."""

    state_dim: int = 32
    action_dim: int = 7
    batch_size: int = 256
    updates: int = 50
    repeats: int = 5
    threads: int = 2
    json: bool = False


def _time_updates(n_critics: int, subsample: int | None, cfg: LearnerBench, precision: str = "highest",
                  keep_freed: bool = True, faults: list | None = None) -> list[float]:
    import torch
    from torch import nn

    from robot_rl.cpu import keep_freed_memory, minor_page_faults

    torch.set_float32_matmul_precision(precision)
    keep_freed_memory(keep_freed)

    from robot_rl.agents.sac import SACAgent, SACConfig, make_optimizers, update

    class StateEncoder(nn.Module):
        def forward(self, obs):
            return obs["state"]

    sac = SACConfig(n_critics=n_critics, critic_subsample=subsample, critic_updates_per_actor_update=1,
                    batch_size=cfg.batch_size)
    torch.manual_seed(0)
    agent = SACAgent(StateEncoder(), cfg.state_dim, cfg.action_dim, sac)
    opts = make_optimizers(agent, sac)
    b = cfg.batch_size
    batch = {"obs": {"state": torch.randn(b, cfg.state_dim)}, "next_obs": {"state": torch.randn(b, cfg.state_dim)},
             "action": torch.rand(b, cfg.action_dim) * 2 - 1, "reward": torch.rand(b), "mask": torch.ones(b)}
    for _ in range(10):
        update(agent, opts, batch, sac)
    times = []
    for _ in range(cfg.repeats):
        f0, t0 = minor_page_faults(), time.perf_counter()
        for _ in range(cfg.updates):
            update(agent, opts, batch, sac)
        times.append((time.perf_counter() - t0) / cfg.updates * 1e3)
        if faults is not None:
            faults.append((minor_page_faults() - f0) / cfg.updates)
    return times


def run(cfg: LearnerBench) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(cfg.threads)
    # Interleaved repeats: these machines drift by ±20 % within a minute.
    rlpd, hil, bf16, glibc = [], [], [], []
    rlpd_faults, glibc_faults = [], []
    one = LearnerBench(**{**cfg.__dict__, "repeats": 1})
    for _ in range(cfg.repeats):
        rlpd += _time_updates(10, 2, one, faults=rlpd_faults)
        glibc += _time_updates(10, 2, one, keep_freed=False, faults=glibc_faults)
        hil += _time_updates(2, None, one)
        bf16 += _time_updates(10, 2, one, "medium")
    torch.set_float32_matmul_precision("highest")
    from robot_rl.cpu import keep_freed_memory

    keep_freed_memory(True)
    return {"bench": "learner", "ms_per_update": round(float(np.median(rlpd)), 2),
            "ms_per_update_range": [round(min(rlpd), 2), round(max(rlpd), 2)],
            "ms_per_update_2_critics": round(float(np.median(hil)), 2),
            "ms_per_update_glibc_default_malloc": round(float(np.median(glibc)), 2),
            "page_faults_per_update": round(float(np.median(rlpd_faults)), 1),
            "page_faults_per_update_glibc_default_malloc": round(float(np.median(glibc_faults)), 1),
            "ms_per_update_bf16_matmul": round(float(np.median(bf16)), 2),
            "lerobot_sac_reference_ms": 150,
            "speedup_vs_lerobot_reference": round(150 / float(np.median(rlpd)), 1),
            "setup": {"batch": cfg.batch_size, "critics": "10, target min over random 2", "mlp": "256x256 LayerNorm",
                      "critic_updates_per_actor_update": 1, "torch_threads": cfg.threads, "cpus": os.cpu_count(),
                      "bf16_matmul": "--matmul-precision medium: float32 matmuls computed in bfloat16",
                      "lerobot_reference": "../shared/REFERENCES.md: LeRobot SAC, batch 256, 2 CPU cores, 140-160 ms"}}
