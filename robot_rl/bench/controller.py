"""`robot-rl bench controller`: simulated speed of the 1 kHz loop, and its period jitter in real
time with the control loop on a thread vs in its own process, under server load.

The load is what a robot PC sees: a control client stepping at 10 Hz with two camera frames, a
monitor (recorder) polling observations with frames at 100 Hz, and the twin cameras rendering at
30 Hz in their own process. The loop is measured on a thread of the server process, in its own
process, and in its own process with SCHED_FIFO priority (what a robot PC with a PREEMPT_RT
kernel runs; skipped when the OS refuses it). The figures decide where the real-time loop runs
(`robot-rl serve --loop process` is the default).
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from robot_rl.bridge.client import BridgeClient
from robot_rl.bridge.serve import ServeConfig, start_server
from robot_rl.control.commands import ResetCommand, TargetCommand
from robot_rl.control.runtime import SteppedRuntime
from robot_rl.task_spec import load_task
from robot_rl.control.commands import core_config
from robot_rl.twin.backend import TwinBackend


@dataclass(frozen=True)
class ControllerBench:
    """1 kHz loop: sim speed factor (no rendering) and real-time period jitter (thread vs process)."""

    task: str = "pick_cube"
    sim_seconds: float = 10.0
    """Simulated time for the speed measurement."""
    realtime_seconds: float = 6.0
    """Wall time per real-time runtime for the jitter measurement."""
    load: bool = True
    """Load the server with clients and camera rendering while measuring jitter."""
    json: bool = False


def sim_speed(task_name: str, sim_seconds: float, *, segments: int = 5) -> dict:
    """Simulated seconds per wall second of the stepped twin: 1 kHz law + physics, no rendering,
    tracking a moving target (a 4 cm circle at 0.5 Hz, new target every 100 ms).

    Measured in `segments` stretches, each followed by the same stretch of bare `mj_step` on the
    same model; the median factor is reported (this VM's speed drifts by ±30 % over seconds) with
    the physics-only factor beside it.
    """
    import mujoco

    task = load_task(task_name)
    rt = SteppedRuntime(TwinBackend(task), core_config(task))
    arm = rt.core.backend
    center = np.array(task.reset.pose)
    rt.submit(ResetCommand(1, center, teleport=True, scene_seed=0))
    rt.wait_event(5.0)
    steps_per_segment = max(1, int(sim_seconds / segments / 0.1))
    factors, physics = [], []
    scratch = mujoco.MjData(arm.model)
    k = 0
    for _ in range(segments):
        t0 = time.perf_counter()
        for _ in range(steps_per_segment):
            target = center.copy()
            phase = 2 * math.pi * 0.5 * k * 0.1
            target[0] += 0.04 * math.cos(phase)
            target[1] += 0.04 * math.sin(phase)
            rt.submit(TargetCommand(k + 1, target, None))
            rt.advance(0.1)
            k += 1
        factors.append(steps_per_segment * 0.1 / (time.perf_counter() - t0))
        scratch.qpos[:] = arm.data.qpos
        t0 = time.perf_counter()
        for _ in range(steps_per_segment * 100):
            mujoco.mj_step(arm.model, scratch)
        physics.append(steps_per_segment * 0.1 / (time.perf_counter() - t0))
    mode = rt.snapshot().mode.name
    rt.close()
    return {"sim_speed_factor": round(float(np.median(factors)), 2),
            "sim_speed_factor_range": [round(min(factors), 2), round(max(factors), 2)],
            "physics_only_factor": round(float(np.median(physics)), 1),
            "tick_us": round(1000.0 / float(np.median(factors)), 1), "final_mode": mode}


def _load(address: str, cameras: tuple[str, ...], stop: threading.Event, counts: dict) -> list[threading.Thread]:
    def control() -> None:
        c = BridgeClient(address, name="bench-control")
        c.reset(seed=1)
        k = 0
        while not stop.is_set():
            d = np.zeros(6)
            d[1] = 0.01 * math.sin(0.3 * k)
            c.step(d, hold_s=0.1, cameras=cameras)
            counts["steps"] += 1
            k += 1
        c.close()

    def monitor() -> None:
        c = BridgeClient(address, name="bench-monitor", role="monitor")
        next_t = time.monotonic()
        while not stop.is_set():
            c.observe(cameras)
            counts["observes"] += 1
            next_t += 0.01
            time.sleep(max(0.0, next_t - time.monotonic()))
        c.close()

    threads = [threading.Thread(target=control, daemon=True), threading.Thread(target=monitor, daemon=True)]
    for t in threads:
        t.start()
    return threads


def jitter(task_name: str, loop: str, seconds: float, *, load: bool, rt_priority: int | None = None,
           label: str | None = None) -> dict:
    task = load_task(task_name)
    stack = start_server(ServeConfig(task=task_name, bind="tcp://127.0.0.1:0", pub_bind="", pace="realtime", loop=loop,
                                     rt_priority=rt_priority), task=task)
    loop = label or loop
    stop = threading.Event()
    counts = {"steps": 0, "observes": 0}
    threads = []
    try:
        if load:
            threads = _load(stack.address, tuple(c.name for c in task.cameras), stop, counts)
        time.sleep(1.0)  # start-up and the first reset
        stack.service.runtime.reset_stats()
        time.sleep(seconds)
        stats = stack.service.runtime.stats()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
        stack.close()
    return {f"{loop}_period_jitter_p50_us": round(stats.period_jitter_p50_us, 1),
            f"{loop}_period_jitter_p99_us": round(stats.period_jitter_p99_us, 1),
            f"{loop}_period_jitter_max_us": round(stats.period_jitter_max_us, 1),
            f"{loop}_overruns": stats.overruns, f"{loop}_ticks": stats.n_ticks,
            f"{loop}_compute_p99_us": round(stats.compute_p99_us, 1),
            f"{loop}_load_steps": counts["steps"], f"{loop}_load_observes": counts["observes"]}


def _fifo_allowed() -> bool:
    try:
        param = os.sched_getparam(0)
        policy = os.sched_getscheduler(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        os.sched_setscheduler(0, policy, param)
        return True
    except (AttributeError, PermissionError, OSError):
        return False


def run(cfg: ControllerBench) -> dict:
    out: dict = {"bench": "controller"}
    out.update(sim_speed(cfg.task, cfg.sim_seconds))
    out.update(jitter(cfg.task, "thread", cfg.realtime_seconds, load=cfg.load, rt_priority=None))
    out.update(jitter(cfg.task, "process", cfg.realtime_seconds, load=cfg.load, rt_priority=None))
    fifo = _fifo_allowed()
    if fifo:
        # A FIFO *thread* still waits for the GIL held by normal-priority threads (priority
        # inversion); a FIFO process owns its interpreter.
        out.update(jitter(cfg.task, "thread", cfg.realtime_seconds, load=cfg.load, rt_priority=80,
                          label="thread_fifo"))
        out.update(jitter(cfg.task, "process", cfg.realtime_seconds, load=cfg.load, rt_priority=80,
                          label="process_fifo"))
    candidates = ["thread", "process"] + (["thread_fifo", "process_fifo"] if fifo else [])
    best = min(candidates, key=lambda k: out[f"{k}_period_jitter_p99_us"])
    default = "process_fifo" if fifo else "process"
    out["period_jitter_p99_us"] = out[f"{default}_period_jitter_p99_us"]
    out["default_loop"] = default
    out["lowest_jitter_loop"] = best
    out["setup"] = {"cpus": os.cpu_count(), "load": cfg.load, "realtime_seconds": cfg.realtime_seconds}
    return out


