"""Success plots: IQM and stratified bootstrap as in Agarwal et al. 2021, grouping, alignment, the PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from robot_rl.errors import ConfigError
from robot_rl.learning.metrics import MetricsWriter
from robot_rl.learning.plot import (
    CurvePoint,
    PlotConfig,
    bootstrap_ci,
    group_runs,
    iqm,
    plot_success,
    run,
    strip_seed,
    success_curves,
    x_axis_scale,
)
from robot_rl.learning.plot import _log_ticks, _steps_label

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FLOAT_ATOL = 1e-12
FAST_RESAMPLES = 500


def make_run(root: Path, name: str, evals: dict[int, float], config: dict | None = None) -> Path:
    """A run folder with one eval line per env_step (and a train line, which plots must ignore)."""
    path = root / name
    with MetricsWriter(path, tensorboard=False) as mw:
        for step, rate in evals.items():
            mw.write("train", step, {"success_rate": -1.0})
            mw.write_eval(step, success_rate=rate, episodes=10, mean_steps=50.0, cycle_time_s=4.0)
    if config is not None:
        (path / "config.json").write_text(json.dumps(config))
    return path


# --- statistics ----------------------------------------------------------------------------------

def test_iqm_drops_the_bottom_and_top_quarter():
    assert iqm(range(1, 9)) == pytest.approx(np.mean([3, 4, 5, 6]))  # 4.5
    assert iqm([1, 2, 3, 4, 100]) == pytest.approx(3.0)  # floor(5/4) = 1 cut at each end
    assert iqm([0.0, 0.5, 1.0]) == pytest.approx(0.5)  # n < 4: nothing is cut, plain mean
    assert iqm([0.2, 0.9, 1.0]) == pytest.approx(0.7)
    assert iqm([[1, 2, 3, 4, 100], [5, 5, 5, 5, 5]], axis=1) == pytest.approx([3.0, 5.0])
    with pytest.raises(ValueError, match="iqm of no values"):
        iqm([])


@pytest.mark.parametrize("n", range(1, 13))
def test_iqm_matches_rliable_definition_scipy_trim_mean(n):
    stats = pytest.importorskip("scipy.stats")
    x = np.random.default_rng(n).random(n)
    assert iqm(x) == pytest.approx(stats.trim_mean(x, 0.25), abs=FLOAT_ATOL)


def test_iqm_by_hand_and_the_scipy_percentile_bootstrap_band():
    x = [9.0, 1.0, 8.0, 2.0, 7.0, 3.0, 5.0, 4.0]  # sorted 1 2 | 3 4 5 7 | 8 9: floor(8/4) = 2 cut at each end
    assert iqm(x) == (3.0 + 4.0 + 5.0 + 7.0) / 4  # 4.75, not the plain mean 4.875
    assert iqm(x + [6.0, 10.0]) == (3.0 + 4.0 + 5.0 + 6.0 + 7.0 + 8.0) / 6  # n = 10: floor(2.5) = 2 cut
    # The band is scipy's percentile bootstrap of the IQM with the seed's generator.
    ref = stats.bootstrap((np.asarray(x),), lambda s, axis: stats.trim_mean(s, 0.25, axis=axis), vectorized=True,
                          n_resamples=FAST_RESAMPLES, method="percentile", rng=np.random.default_rng(5))
    lo, hi = bootstrap_ci(x, n_resamples=FAST_RESAMPLES, seed=5)
    assert (lo, hi) == pytest.approx(tuple(ref.confidence_interval), abs=FLOAT_ATOL)
    assert lo <= iqm(x) <= hi
    # More seeds from the same distribution: the band still holds the IQM, and narrows.
    more = np.random.default_rng(0).choice(x, 200)
    lo_more, hi_more = bootstrap_ci(more, n_resamples=FAST_RESAMPLES, seed=5)
    assert lo_more <= iqm(more) <= hi_more
    assert hi_more - lo_more < (hi - lo) / 2


def test_bootstrap_ci_contains_the_estimate_and_shrinks_with_more_seeds():
    rng = np.random.default_rng(0)
    few, many = rng.random(3), rng.random(60)
    widths = []
    for values in (few, many):
        lo, hi = bootstrap_ci(values, n_resamples=2000, seed=1)
        assert lo <= iqm(values) <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2


def test_bootstrap_ci_is_reproducible_and_degenerate_for_one_run():
    x = [0.1, 0.4, 0.9, 0.6]
    assert bootstrap_ci(x, seed=7) == bootstrap_ci(x, seed=7)
    assert bootstrap_ci([0.3]) == (0.3, 0.3)
    lo90, hi90 = bootstrap_ci(x, confidence=0.9, seed=7)
    lo99, hi99 = bootstrap_ci(x, confidence=0.99, seed=7)
    assert lo99 <= lo90 and hi90 <= hi99


def test_bootstrap_resamples_runs_within_each_task():
    # Each task's runs agree, so a stratified resample always holds three 0s and three 1s; a pooled
    # resample of the six scores would not, and its band would be wide.
    values = np.array([[0.0, 1.0]] * 3)
    assert bootstrap_ci(values, seed=3) == (0.5, 0.5)
    lo, hi = bootstrap_ci(values.reshape(-1), seed=3)
    assert hi - lo > 0.5


def test_bootstrap_accepts_other_statistics():
    lo, hi = bootstrap_ci([1.0, 2.0, 3.0, 4.0], np.median, n_resamples=FAST_RESAMPLES)
    assert 1.0 <= lo <= 2.5 <= hi <= 4.0


# --- grouping and alignment ----------------------------------------------------------------------

@pytest.mark.parametrize("name, group", [("sac_seed3", "sac"), ("sac-seed3", "sac"), ("sac_seed_3", "sac"),
                                         ("sac_s3", "sac"), ("sac-s12", "sac"), ("SAC_Seed1", "SAC"),
                                         ("sac_utd4", "sac_utd4"), ("rlpd", "rlpd"), ("seed3", "seed3")])
def test_strip_seed(name, group):
    assert strip_seed(name) == group


def test_group_runs_by_name_labels_and_config(tmp_path):
    paths = [make_run(tmp_path, n, {0: 0.0}, config={"seed": i, "name": n, "agent": {"utd": u}})
             for i, (n, u) in enumerate([("sac_seed0", 1), ("sac_seed1", 1), ("rlpd_s0", 4)])]
    assert group_runs(paths) == {"sac": paths[:2], "rlpd": paths[2:]}
    assert group_runs(paths, labels=["a", "b", "a"]) == {"a": [paths[0], paths[2]], "b": [paths[1]]}
    assert group_runs(paths, label_by="config") == {"agent.utd=1": paths[:2], "agent.utd=4": paths[2:]}
    with pytest.raises(ConfigError, match="one entry per run"):
        group_runs(paths, labels=["a"])
    (paths[0] / "config.json").unlink()
    with pytest.raises(ConfigError, match="config.json"):
        group_runs(paths, label_by="config")


def test_common_alignment_uses_the_env_steps_every_seed_evaluated(tmp_path):
    runs = [make_run(tmp_path, "a_seed0", {0: 0.0, 100: 0.5, 200: 1.0}),
            make_run(tmp_path, "a_seed1", {0: 0.2, 100: 0.7}),  # still running
            make_run(tmp_path, "a_seed2", {0: 0.1, 100: 0.3, 150: 0.9})]  # an off-grid eval
    table = success_curves({"a": runs}, n_resamples=FAST_RESAMPLES)
    assert [(p.env_step, p.n_seeds) for p in table["a"]] == [(0, 3), (100, 3)]
    assert table["a"][1].iqm == pytest.approx(0.5)
    table = success_curves({"a": runs}, min_seeds=1, n_resamples=FAST_RESAMPLES)
    assert [(p.env_step, p.n_seeds) for p in table["a"]] == [(0, 3), (100, 3), (150, 1), (200, 1)]


def test_interpolated_alignment_for_irregular_eval_steps(tmp_path):
    runs = [make_run(tmp_path, "a_seed0", {0: 0.0, 100: 1.0}),
            make_run(tmp_path, "a_seed1", {10: 0.0, 60: 1.0, 110: 1.0})]
    points = {p.env_step: p for p in success_curves({"a": runs}, align="interpolate",
                                                    n_resamples=FAST_RESAMPLES)["a"]}
    assert sorted(points) == [10, 60, 100]  # 0 and 110 lie outside one seed's eval range
    assert points[60].iqm == pytest.approx((0.6 + 1.0) / 2)
    assert points[10].n_seeds == 2


def test_snapped_alignment_counts_each_eval_at_the_multiple_that_triggered_it(tmp_path, caplog):
    # robot-rl train evaluates when the episode crossing a multiple of eval_every ends: seeds a few
    # steps apart, and runs stopped after one evaluation, which interpolation cannot line up.
    runs = [make_run(tmp_path, "a_seed0", {0: 0.0, 5030: 0.98}, config={"eval_every": 5000}),
            make_run(tmp_path, "a_seed1", {5022: 1.0, 10040: 1.0}, config={"train": {"eval_every": 5000}}),
            make_run(tmp_path, "a_seed2", {5050: 0.92}, config={"eval_every": 5000})]
    with pytest.raises(ConfigError, match="nothing to plot"):  # no env_step inside all three eval ranges
        success_curves({"a": runs}, align="interpolate", n_resamples=FAST_RESAMPLES)
    points = success_curves({"a": runs}, align="snap", n_resamples=FAST_RESAMPLES)["a"]
    assert [(p.env_step, p.n_seeds) for p in points] == [(5000, 3)]
    assert points[0].iqm == pytest.approx((0.98 + 1.0 + 0.92) / 3)
    no_config = make_run(tmp_path, "b_seed0", {5030: 0.5})
    assert [p.env_step for p in success_curves({"b": [no_config]}, align="snap",
                                               n_resamples=FAST_RESAMPLES)["b"]] == [5030]
    assert "no eval_every" in caplog.text
    with pytest.raises(ConfigError, match="align must be one of"):
        PlotConfig(runs=("x",), align="nearest")


def test_the_last_eval_at_an_env_step_wins_and_empty_seeds_are_left_out(tmp_path, caplog):
    run_a = make_run(tmp_path, "a_seed0", {0: 0.0, 100: 0.2})
    with MetricsWriter(run_a, tensorboard=False) as mw:  # resumed from env_step 0: 100 evaluated again
        mw.write_eval(100, success_rate=0.8, episodes=10, mean_steps=50.0, cycle_time_s=4.0)
    empty = tmp_path / "a_seed1"
    MetricsWriter(empty, tensorboard=False).close()
    table = success_curves({"a": [run_a, empty]}, n_resamples=FAST_RESAMPLES)
    assert [(p.env_step, p.iqm, p.n_seeds) for p in table["a"]] == [(0, 0.0, 1), (100, 0.8, 1)]
    assert "no eval lines" in caplog.text
    with pytest.raises(ConfigError, match="nothing to plot"):
        success_curves({"a": [empty]})
    with pytest.raises(ConfigError, match="no metrics file"):
        success_curves({"a": [tmp_path / "missing"]})


# --- the plot ------------------------------------------------------------------------------------

def test_plot_writes_a_png_and_returns_the_iqm_table(tmp_path):
    three = {"sac_seed0": [0.0, 0.2, 0.9], "sac_seed1": [0.1, 0.5, 1.0], "sac_seed2": [0.0, 0.2, 0.5]}
    five = {f"rlpd_seed{i}": [0.0, 0.1 * i, r] for i, r in enumerate([0.0, 0.2, 0.4, 0.6, 1.0])}
    runs = [make_run(tmp_path, name, dict(zip([0, 1000, 2000], rates))) for name, rates in {**three, **five}.items()]
    out = tmp_path / "plots" / "success.png"
    table = plot_success(runs, out, n_resamples=FAST_RESAMPLES)
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000
    assert not list(out.parent.glob("*.tmp"))
    assert list(table) == ["sac", "rlpd"]
    sac = table["sac"]
    assert [p.env_step for p in sac] == [0, 1000, 2000] and all(p.n_seeds == 3 for p in sac)
    for point, rates in zip(sac, zip(*three.values())):  # 3 seeds: IQM cuts nothing, so it is the mean
        assert point.iqm == pytest.approx(np.mean(rates))
        assert point.lo <= point.iqm <= point.hi
    final = table["rlpd"][-1]
    assert final == CurvePoint(2000, pytest.approx(0.4), final.lo, final.hi, 5)  # mean(0.2, 0.4, 0.6)
    assert 0.0 <= final.lo < 0.4 < final.hi <= 1.0
    assert plot_success(runs, out, n_resamples=FAST_RESAMPLES) == table  # seeded: same band every time


def test_run_returns_a_json_summary(tmp_path):
    runs = [str(make_run(tmp_path, f"x_seed{i}", {0: 0.1 * i, 10: 0.5})) for i in range(2)]
    out = tmp_path / "x.png"
    summary = run(PlotConfig(runs=tuple(runs), out=str(out), n_resamples=FAST_RESAMPLES, title="x"))
    assert json.loads(json.dumps(summary)) == summary
    assert summary["groups"] == {"x": runs} and summary["out"] == str(out)
    assert summary["curves"]["x"][1] == {"env_step": 10, "iqm": 0.5, "lo": 0.5, "hi": 0.5, "n_seeds": 2}
    assert out.read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize("kwargs, field", [({"runs": ()}, "runs"), ({"labels": ("a", "b")}, "labels"),
                                           ({"min_seeds": 0}, "min_seeds"), ({"n_resamples": 10}, "n_resamples"),
                                           ({"confidence": 95.0}, "confidence"), ({"out": "x.pdf"}, "out"),
                                           ({"align": "nearest"}, "align"), ({"x_scale": "log2"}, "x_scale")])
def test_plot_config_names_the_bad_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        PlotConfig(**{"runs": ("runs/a",), **kwargs})


def test_plot_config_parses_runs_as_positional_arguments():
    import tyro

    cfg = tyro.cli(PlotConfig, args=["runs/a_seed0", "runs/a_seed1", "--out", "a.png", "--min-seeds", "2"])
    assert cfg == PlotConfig(runs=("runs/a_seed0", "runs/a_seed1"), out="a.png", min_seeds=2)


def test_reference_lines_are_drawn(tmp_path):
    runs = [make_run(tmp_path, f"m_seed{i}", {0: 0.2, 100: 0.3 + 0.1 * i}) for i in range(2)]
    plain = plot_success(runs, tmp_path / "plain.png", n_resamples=FAST_RESAMPLES, title="t")
    with_base = plot_success(runs, tmp_path / "base.png", n_resamples=FAST_RESAMPLES, title="t",
                             references={"base policy": 0.23})
    assert with_base == plain  # the curves are the same ...
    assert (tmp_path / "base.png").read_bytes() != (tmp_path / "plain.png").read_bytes()  # ... plus the line


def _curve(*steps: int) -> list[CurvePoint]:
    return [CurvePoint(s, 0.5, 0.4, 0.6, 3) for s in steps]


def test_auto_x_scale_goes_logarithmic_only_for_curves_of_very_different_length():
    off_policy, ppo = _curve(0, 10_000, 20_000), _curve(*range(0, 300_001, 50_000))
    assert x_axis_scale({"sac": off_policy, "ppo": ppo}) == ("symlog", 10_000.0)  # 300k ≥ 5 × 20k
    assert x_axis_scale({"sac": off_policy, "ppo": _curve(0, 50_000, 99_000)}) == ("linear", None)  # < 5×
    assert x_axis_scale({"sac": off_policy}) == ("linear", None)
    assert x_axis_scale({"sac": off_policy}, "log") == ("symlog", 10_000.0)  # the first eval after 0
    assert x_axis_scale({"sac": off_policy, "ppo": ppo}, "linear") == ("linear", None)
    assert x_axis_scale({"sac": _curve(0)}, "log") == ("linear", None)  # nothing past 0 to put on a log axis
    with pytest.raises(ConfigError, match="x_scale"):
        x_axis_scale({"sac": off_policy}, "log2")


def test_log_ticks_are_one_two_five_per_decade_and_end_at_the_last_step():
    assert _log_ticks(10_000, 300_000) == [0, 10_000, 20_000, 50_000, 100_000, 300_000]  # 200k: too near 300k
    assert _log_ticks(5_000, 20_000) == [0, 5_000, 10_000, 20_000]
    assert _log_ticks(10_004, 300_032) == [0, 10_004, 20_000, 50_000, 100_000, 300_032]
    assert [_steps_label(x) for x in (0, 500, 10_004, 300_032, 1_500_000)] == ["0", "500", "10k", "300k", "1.5M"]


def test_the_x_scale_changes_the_drawn_axis(tmp_path):
    runs = [make_run(tmp_path, "sac_seed0", {0: 0.4, 10_000: 0.6, 20_000: 0.8}),
            make_run(tmp_path, "ppo_seed0", {0: 0.4, 100_000: 0.7, 300_000: 1.0})]
    auto = plot_success(runs, tmp_path / "auto.png", n_resamples=FAST_RESAMPLES, align="interpolate")
    log = plot_success(runs, tmp_path / "log.png", n_resamples=FAST_RESAMPLES, align="interpolate", x_scale="log")
    linear = plot_success(runs, tmp_path / "linear.png", n_resamples=FAST_RESAMPLES, align="interpolate",
                          x_scale="linear")
    assert auto == log == linear  # the same curves on different axes
    assert (tmp_path / "auto.png").read_bytes() == (tmp_path / "log.png").read_bytes()
    assert (tmp_path / "log.png").read_bytes() != (tmp_path / "linear.png").read_bytes()
