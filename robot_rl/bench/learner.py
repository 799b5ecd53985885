"""`robot-rl bench learner`: milliseconds per SAC update on this CPU or `--device` (state observations).

The configuration the issue names: batch 256, 10 critics (target: min over a random 2),
256×256 MLPs with LayerNorm, one critic update and one actor update per update, run as the
learner runs it (critic ensembles torch.compile'd). Measured beside it in the same run, repeats
interleaved: the same set eager (`--no-compile`), with glibc's default allocator thresholds
(robot_rl.cpu.keep_freed_memory: why), with bfloat16 matmuls, and HIL-SERL's 2-critic set.
Each variant lives in its own process (one runs at a time): a heap that another variant grew
would hide the allocator's page faults.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class LearnerBench:
    """SAC update time (median of interleaved repeats) for the 10-critic RLPD set and variants."""

    state_dim: int = 32
    action_dim: int = 7
    batch_size: int = 256
    updates: int = 50
    repeats: int = 5
    threads: int = 2
    device: str = "cpu"
    """cpu, cuda, cuda:N or auto: where the agent and the batch live (same shapes on any device)."""
    json: bool = False


@dataclass(frozen=True)
class _Variant:
    n_critics: int = 10
    subsample: int | None = 2
    compile: bool = True
    precision: str = "highest"
    keep_freed: bool = True


_VARIANTS = {
    "rlpd": _Variant(),
    "eager": _Variant(compile=False),
    "glibc": _Variant(keep_freed=False),
    "bf16": _Variant(precision="medium"),
    "hil": _Variant(n_critics=2, subsample=None),
}


class _Timed:
    """One variant's agent, built and warmed up (compiled) once, timed in repeats."""

    def __init__(self, v: _Variant, cfg: LearnerBench) -> None:
        import torch
        from torch import nn

        from robot_rl.agents.sac import SACAgent, SACConfig, compile_critics, make_optimizers
        from robot_rl.cpu import keep_freed_memory
        from robot_rl.learning.device import resolve_device, to_device

        torch.set_num_threads(cfg.threads)
        torch.set_float32_matmul_precision(v.precision)
        keep_freed_memory(v.keep_freed)

        class StateEncoder(nn.Module):
            def forward(self, obs):
                return obs["state"]

        self.v, self.cfg = v, cfg
        self.device = resolve_device(cfg.device)
        self.sac = SACConfig(n_critics=v.n_critics, critic_subsample=v.subsample, critic_updates_per_actor_update=1,
                             batch_size=cfg.batch_size)
        torch.manual_seed(0)
        self.agent = SACAgent(StateEncoder(), cfg.state_dim, cfg.action_dim, self.sac).to(self.device)
        if v.compile:
            compile_critics(self.agent)
        self.opts = make_optimizers(self.agent, self.sac)
        b = cfg.batch_size
        self.batch = to_device({"obs": {"state": torch.randn(b, cfg.state_dim)},
                                "next_obs": {"state": torch.randn(b, cfg.state_dim)},
                                "action": torch.rand(b, cfg.action_dim) * 2 - 1, "reward": torch.rand(b),
                                "mask": torch.ones(b)}, self.device)
        t0 = time.perf_counter()
        self._updates(10)
        self.warmup_s = time.perf_counter() - t0

    def _updates(self, n: int) -> None:
        from robot_rl.agents.sac import update

        for _ in range(n):
            update(self.agent, self.opts, self.batch, self.sac)
        if self.device.type == "cuda":  # kernels run asynchronously: time them to their end
            import torch

            torch.cuda.synchronize(self.device)

    def repeat(self) -> tuple[float, float]:
        """(ms per update, page faults per update) over `cfg.updates` updates."""
        from robot_rl.cpu import minor_page_faults

        f0, t0 = minor_page_faults(), time.perf_counter()
        self._updates(self.cfg.updates)
        return (time.perf_counter() - t0) / self.cfg.updates * 1e3, (minor_page_faults() - f0) / self.cfg.updates


def _serve(conn, v: _Variant, cfg: LearnerBench) -> None:
    """Worker process: build and warm up one variant, then time a repeat per request."""
    timed = _Timed(v, cfg)
    conn.send(timed.warmup_s)
    while conn.recv() == "repeat":
        conn.send(timed.repeat())


def run(cfg: LearnerBench) -> dict:
    import numpy as np

    from robot_rl.learning.device import resolve_device

    device = resolve_device(cfg.device)  # a missing CUDA device fails here, before any worker starts

    ctx = multiprocessing.get_context("spawn")
    workers, warmup_s = {}, {}
    ms: dict[str, list[float]] = {name: [] for name in _VARIANTS}
    faults: dict[str, list[float]] = {name: [] for name in _VARIANTS}
    try:
        for name, v in _VARIANTS.items():  # built one at a time: compiling needs the cores too
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(theirs, v, cfg), daemon=True)
            proc.start()
            workers[name] = (proc, ours)
            warmup_s[name] = ours.recv()
        # Interleaved repeats: these machines drift by ±20 % within a minute.
        for _ in range(cfg.repeats):
            for name, (_, conn) in workers.items():
                conn.send("repeat")
                t, f = conn.recv()
                ms[name].append(t)
                faults[name].append(f)
    finally:
        for proc, conn in workers.values():
            if proc.is_alive():
                conn.send("stop")
                proc.join(timeout=10)

    def med(name: str, what: str = "ms") -> float:
        return round(float(np.median((ms if what == "ms" else faults)[name])), 2)

    rlpd = ms["rlpd"]
    return {"bench": "learner", "ms_per_update": med("rlpd"),
            "ms_per_update_range": [round(min(rlpd), 2), round(max(rlpd), 2)],
            "ms_per_update_eager": med("eager"),
            "compile_speedup": round(med("eager") / med("rlpd"), 2),
            "compile_warmup_s": round(warmup_s["rlpd"] - warmup_s["eager"], 1),
            "ms_per_update_2_critics": med("hil"),
            "ms_per_update_glibc_default_malloc": med("glibc"),
            "page_faults_per_update": round(med("rlpd", "faults"), 1),
            "page_faults_per_update_glibc_default_malloc": round(med("glibc", "faults"), 1),
            "ms_per_update_bf16_matmul": med("bf16"),
            "lerobot_sac_reference_ms": 150,
            "speedup_vs_lerobot_reference": round(150 / med("rlpd"), 1),
            "setup": {"device": str(device), "batch": cfg.batch_size, "critics": "10, target min over random 2",
                      "mlp": "256x256 LayerNorm",
                      "critic_updates_per_actor_update": 1, "torch_threads": cfg.threads, "cpus": os.cpu_count(),
                      "compile": "critic ensembles torch.compile'd as the learner runs them (--no-compile: eager)",
                      "bf16_matmul": "--matmul-precision medium: float32 matmuls computed in bfloat16",
                      "lerobot_reference": "../shared/REFERENCES.md: LeRobot SAC, batch 256, 2 CPU cores, 140-160 ms"}}
