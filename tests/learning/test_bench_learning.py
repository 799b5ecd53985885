"""`robot-rl bench learning` bookkeeping on a tiny budget (no updates: the learning itself is the
benchmark's job): finished seeds are kept with --reuse and reported with --report-only."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
ARGS = ("bench", "learning", "--demos", "2", "--steps", "60", "--eval-every", "30", "--eval-episodes", "1",
        "--runs-dir", "out", "--json")


def bench(cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robot_rl.cli.main", *ARGS, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=280, env=ENV)


@pytest.mark.slow
def test_reuse_keeps_finished_seeds_and_report_only_trains_nothing(tmp_path):
    first = bench(tmp_path, "--seeds", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    seed0 = tmp_path / "out" / "pick_cube_state_none_seed0" / "metrics.jsonl"
    before = seed0.read_bytes()
    (tmp_path / "out" / "pick_cube_state_none_seed1").mkdir()  # an interrupted seed: trained again

    second = bench(tmp_path, "--seeds", "2", "--reuse")
    assert second.returncode == 0, second.stderr[-3000:]
    report = json.loads(second.stdout.strip().splitlines()[-1])
    assert seed0.read_bytes() == before  # not retrained
    assert report["seeds_reported"] == [0, 1]
    assert all(len(v) == 2 for v in report["success_by_step"].values())
    assert "60" in report["success_by_step"]  # the final evaluation, keyed by the budget

    third = bench(tmp_path, "--seeds", "3", "--report-only")
    assert third.returncode == 0, third.stderr[-3000:]
    assert json.loads(third.stdout.strip().splitlines()[-1])["seeds_reported"] == [0, 1]
    assert not (tmp_path / "out" / "pick_cube_state_none_seed2").exists()

    # runs trained with other settings are not passed off as this bench's
    other = bench(tmp_path, "--seeds", "1", "--report-only", "--utd", "1", "--agent.n-critics", "4")
    assert other.returncode == 2
    assert "utd: 2.0 (bench: 1.0)" in other.stderr and "agent.n_critics: 10 (bench: 4)" in other.stderr

    empty = bench(tmp_path, "--report-only", "--runs-dir", "elsewhere")
    assert empty.returncode == 2 and "no finished runs" in empty.stderr


@pytest.mark.slow
def test_benchmarks_started_together_record_the_cached_demos_once(tmp_path):
    """Two processes asking for the same demo cache: one records, the other waits and finds it."""
    code = ("import sys; from robot_rl.bench.learning import ensure_demos; "
            "print(ensure_demos('pick_cube', 3, images=False, root=sys.argv[1]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "demos")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(2)]
    outs = [p.communicate(timeout=280) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    folder = {out.strip() for out, _ in outs}
    assert len(folder) == 1
    from robot_rl.data.episodes import episode_paths, iter_episodes

    paths = episode_paths(folder.pop())
    assert len(paths) == 3
    assert sum("recorded 3 episodes" in err for _, err in outs) == 1  # the other one recorded nothing
    assert all(ep.arrays["success"][-1] for ep in iter_episodes(paths[0].parent))
