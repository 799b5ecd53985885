"""`bench controller --backend DOUBLE`: the per-tick work and the constant-work yardstick beside it."""

from __future__ import annotations

import pytest

from robot_rl.bench.controller import tick_compute


@pytest.mark.parametrize("backend", ["franka-double", "ur-double"])
def test_tick_compute_times_the_backend_and_a_constant_tick_of_the_same_size(backend):
    out = tick_compute("pick_cube", backend, 1.0)
    assert out["tick_final_mode"] == "TRACK"
    assert out["tick_compute_ticks"] == (1000 if backend == "franka-double" else 500)
    assert 0 < out["tick_compute_p50_us"] <= out["tick_compute_p99_us"] <= out["tick_compute_p999_us"]
    assert out["tick_physics_p50_us"] > 0  # the double's physics was measured, and subtracted
    # The yardstick is calibrated to the tick's median: within a factor of 2 even on a noisy VM.
    assert 0.5 < out["constant_tick_p50_us"] / out["tick_compute_p50_us"] < 2.0
    assert out["tick_tail_factor"] >= 1.0 and out["constant_tick_tail_factor"] >= 1.0
