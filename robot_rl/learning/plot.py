"""Success rate vs env steps across seeds: IQM with a 95% stratified-bootstrap band (`robot-rl plot`).

Statistics follow Agarwal et al. 2021, "Deep RL at the Edge of the Statistical Precipice" (rliable):

- IQM: the mean of the middle 50% of runs, as rliable's `aggregate_iqm`
  (`scipy.stats.trim_mean(x, 0.25)`): floor(n/4) values are dropped at each end, so with fewer
  than 4 seeds nothing is dropped and the IQM is the plain mean; IQM(1..8) = mean(3..6) = 4.5.
- Band: percentile bootstrap of the IQM (`scipy.stats.bootstrap`). Runs are resampled with
  replacement, independently per task (stratified); a curve here is one task, so this is a
  bootstrap over its seeds.

Grouping (which runs become one curve), in order of precedence:

- `labels`: an explicit label per run; runs sharing a label form one curve.
- `label_by="name"` (default): the run folder name with a trailing seed suffix removed:
  `_seed3`, `-seed3`, `_seed_3`, `_s3`, `-s3` (case-insensitive). sac_utd4_seed0 and
  sac_utd4_seed1 -> "sac_utd4".
- `label_by="config"`: the runs' config.json minus the fields in `ignore_keys` (seed, name,
  resume by default, at any depth); the label lists the fields that tell the groups apart.

Alignment of seeds (which env_steps a point uses):

- `align="common"` (default): exact eval env_steps. A point is drawn at an env_step if at least
  `min_seeds` seeds of the group evaluated exactly there (default: all of them, so every point
  averages the same seeds and a seed that is still running truncates the curve). Evaluate at
  fixed env_step multiples for this.
- `align="interpolate"`: for runs that evaluate at irregular env_steps (e.g. at episode ends on
  a robot). At every env_step any seed evaluated, each seed whose eval range covers it
  contributes its linearly interpolated success rate (never extrapolated); `min_seeds` as above.
- `align="snap"`: for runs of `robot-rl train`, which evaluate when the episode that crosses a
  multiple of `eval_every` ends, a few env steps past it and different per seed: each evaluation
  counts at that multiple (the run's config.json `eval_every`), then as "common". Unlike
  interpolation it also lines up runs with a single evaluation (stopped early, or short budgets).
  A run without `eval_every` in its config keeps its exact env_steps (with a warning).

A run that logs several eval lines at one env_step (a resume re-evaluates steps past its
checkpoint) counts the last one. Seeds with no eval line are left out with a warning.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import tyro
from scipy import stats

from robot_rl.atomic import atomic_write
from robot_rl.errors import ConfigError
from robot_rl.learning.metrics import eval_point, read_metrics
from robot_rl.learning.run_dir import CONFIG_FILE, flatten_dict

log = logging.getLogger(__name__)

ALIGNS = ("common", "interpolate", "snap")

_SEED_SUFFIX = re.compile(r"[_-](?:seed|s)_?\d+$", re.IGNORECASE)


@dataclass(frozen=True)
class PlotConfig:
    """Plot success rate vs env steps of runs: IQM over seeds with a 95% bootstrap band."""

    runs: tyro.conf.Positional[tuple[str, ...]]
    """Run folders (runs/<name>), each with a metrics.jsonl; seeds of one setting form one curve."""
    out: str = "success.png"
    """PNG to write (replaced atomically)."""
    label_by: Literal["name", "config"] = "name"
    """Grouping: folder name minus a trailing _seed<N>/-s<N>, or config.json minus the seed."""
    labels: tuple[str, ...] | None = None
    """One curve label per run, in the order of runs; overrides label_by."""
    ignore_keys: tuple[str, ...] = ("seed", "name", "resume")
    """label_by="config": config fields (names at any depth) that do not split groups."""
    align: Literal["common", "interpolate", "snap"] = "common"
    """Seed alignment: exact shared eval env_steps, linear interpolation, or each eval at the
    multiple of the run's eval_every that triggered it (module docstring)."""
    min_seeds: int | None = None
    """Seeds a point needs to be drawn; default: every seed of its group that has eval lines."""
    n_resamples: int = 2000
    """Bootstrap resamples per point."""
    confidence: float = 0.95
    """Confidence level of the band."""
    seed: int = 0
    """Seed of the bootstrap RNG (each point draws from (seed, env_step))."""
    title: str | None = None
    x_scale: Literal["auto", "linear", "log"] = "auto"
    """Env-step axis: "log" is linear up to the first evaluation, logarithmic beyond (matplotlib
    symlog), so a 20k-step curve stays readable beside a 300k-step one; "auto" picks it when
    the curves' last env_steps differ 5× or more."""

    def __post_init__(self) -> None:
        if not self.runs:
            raise ConfigError("runs must name at least one run folder (runs/<name>)")
        if self.labels is not None and len(self.labels) != len(self.runs):
            raise ConfigError(f"labels must have one entry per run: {len(self.labels)} labels for "
                              f"{len(self.runs)} runs")
        if self.label_by not in ("name", "config"):
            raise ConfigError(f"label_by must be 'name' or 'config', got {self.label_by!r}")
        if self.align not in ALIGNS:
            raise ConfigError(f"align must be one of {ALIGNS}, got {self.align!r}")
        if self.min_seeds is not None and self.min_seeds < 1:
            raise ConfigError(f"min_seeds must be ≥ 1 or None (all seeds), got {self.min_seeds}")
        if self.n_resamples < 100:
            raise ConfigError(f"n_resamples must be ≥ 100 for a usable 95% band, got {self.n_resamples}")
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.x_scale not in ("auto", "linear", "log"):
            raise ConfigError(f"x_scale must be 'auto', 'linear' or 'log', got {self.x_scale!r}")
        if not self.out.lower().endswith(".png"):
            raise ConfigError(f"out must be a .png path, got {self.out!r}")


class CurvePoint(NamedTuple):
    """One point of a curve: IQM of success rate over n_seeds seeds, and its confidence band."""

    env_step: int
    iqm: float
    lo: float
    hi: float
    n_seeds: int


def iqm(values: Any, *, axis: int | None = None) -> Any:
    """Interquartile mean: mean after dropping floor(n/4) values at each end (rliable's definition).

    Args:
        values: scores; with axis=None all of them, else reduced along `axis`.

    Returns:
        float for axis=None, else an array without `axis`.
    """
    x = np.asarray(values, dtype=float)
    if (x.size if axis is None else x.shape[axis]) == 0:
        raise ValueError("iqm of no values: need at least one score")
    mean = stats.trim_mean(x, 0.25, axis=axis)  # cuts int(0.25 · n) = floor(n/4) at each end
    return float(mean) if np.ndim(mean) == 0 else mean


def bootstrap_ci(values: Any, stat: Callable[..., Any] = iqm, *, confidence: float = 0.95,
                 n_resamples: int = 2000, seed: int | Sequence[int] = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of `stat`, resampling runs per task (stratified).

    Args:
        values: scores, shape (runs,) for one task or (runs, tasks).
        stat: reduction taking `axis=` like np.mean; applied to each resample's runs × tasks scores.
        confidence: level of the interval, e.g. 0.95 -> 2.5th and 97.5th percentiles.
        n_resamples: bootstrap resamples.
        seed: RNG seed (anything np.random.default_rng takes), so the band is reproducible.

    Returns:
        (lo, hi). With one run both equal its score.
    """
    x = np.asarray(values, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"values must have shape (runs,) or (runs, tasks) with runs ≥ 1, got {x.shape}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if x.shape[0] == 1:  # every resample is the one run (scipy needs two or more to resample)
        value = float(np.asarray(stat(x.reshape(1, -1), axis=1), dtype=float)[0])
        return value, value

    def pooled(*tasks: np.ndarray, axis: int) -> Any:
        """`stat` over every resampled run of every task (scipy resamples each task's runs apart)."""
        return stat(np.concatenate(tasks, axis=axis), axis=axis)

    res = stats.bootstrap(tuple(x.T), pooled, n_resamples=n_resamples, vectorized=True,
                          confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    lo, hi = res.confidence_interval
    return float(lo), float(hi)


def strip_seed(name: str) -> str:
    """Run name without a trailing seed suffix: sac_seed3, sac-s3, sac_seed_3 -> sac."""
    return _SEED_SUFFIX.sub("", name) or name


def group_runs(runs: Sequence[str | Path], *, label_by: Literal["name", "config"] = "name",
               labels: Sequence[str] | None = None,
               ignore_keys: Sequence[str] = ("seed", "name", "resume")) -> dict[str, list[Path]]:
    """Curve label -> its runs, in order of first appearance (rules in the module docstring).

    Raises:
        ConfigError: labels of the wrong length, or label_by="config" and a run lacks config.json.
    """
    paths = [Path(r) for r in runs]
    if labels is not None:
        if len(labels) != len(paths):
            raise ConfigError(f"labels must have one entry per run: {len(labels)} labels for {len(paths)} runs")
        keys = list(labels)
    elif label_by == "name":
        keys = [strip_seed(p.resolve().name) for p in paths]
    elif label_by == "config":
        keys = _config_labels(paths, tuple(ignore_keys))
    else:
        raise ConfigError(f"label_by must be 'name' or 'config', got {label_by!r}")
    groups: dict[str, list[Path]] = {}
    for key, path in zip(keys, paths):
        groups.setdefault(key, []).append(path)
    return groups


def _config_labels(paths: list[Path], ignore: tuple[str, ...]) -> list[str]:
    flat = []
    for p in paths:
        if not (p / CONFIG_FILE).is_file():
            raise ConfigError(f"{p} has no {CONFIG_FILE} to group by: use label_by='name' or give labels")
        cfg = flatten_dict(json.loads((p / CONFIG_FILE).read_text()))
        flat.append({k: v for k, v in cfg.items() if k not in ignore and k.rsplit(".", 1)[-1] not in ignore})
    keys = [json.dumps(f, sort_keys=True) for f in flat]
    distinct = {k: f for k, f in zip(keys, flat)}
    # Name a group by the fields that tell the groups apart, not by its whole config.
    fields = sorted({f for cfg in distinct.values() for f in cfg
                     if len({json.dumps(c.get(f)) for c in distinct.values()}) > 1})
    names = {}
    for key, cfg in distinct.items():
        first = next(p for p, k in zip(paths, keys) if k == key)
        text = ", ".join(f"{f}={cfg.get(f)}" for f in fields)
        names[key] = text if 0 < len(text) <= 80 else strip_seed(first.resolve().name)
    return [names[k] for k in keys]


def _eval_every(run: Path) -> int | None:
    """The run's evaluation period in env steps (config.json `eval_every`, at any depth), or None."""
    path = run / CONFIG_FILE
    if not path.is_file():
        return None
    value = next((v for k, v in flatten_dict(json.loads(path.read_text())).items()
                  if k.split(".")[-1] == "eval_every"), None)
    return int(value) if isinstance(value, (int, float)) and value >= 1 else None


def _eval_series(run: Path, *, snap: bool = False) -> dict[int, float]:
    every = _eval_every(run) if snap else None
    if snap and every is None:
        log.warning("%s: no eval_every in its %s: its evaluations keep their exact env_steps", run, CONFIG_FILE)
    series: dict[int, float] = {}
    for line in read_metrics(run, kind="eval"):
        if line.get("success_rate") is not None:
            step = int(line["env_step"]) if every is None else eval_point(int(line["env_step"]), every)
            series[step] = float(line["success_rate"])  # later lines win (resumes)
    return dict(sorted(series.items()))


def success_curves(groups: Mapping[str, Sequence[Path]], *,
                   align: Literal["common", "interpolate", "snap"] = "common", min_seeds: int | None = None,
                   confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> dict[str, list[CurvePoint]]:
    """Curve label -> points (env_step, IQM, lo, hi, n_seeds) of eval success rate, by env_step.

    Raises:
        ConfigError: a run has no metrics.jsonl, or no run has any eval line.
    """
    table: dict[str, list[CurvePoint]] = {}
    for label, runs in groups.items():
        series = []
        for run in runs:
            s = _eval_series(Path(run), snap=align == "snap")
            if s:
                series.append(s)
            else:
                log.warning("%s has no eval lines yet: left out of curve %r", run, label)
        points: list[CurvePoint] = []
        need = len(series) if min_seeds is None else min_seeds
        if series and need > len(series):
            log.warning("curve %r: only %d seed(s) with eval lines, fewer than min_seeds=%d: not drawn",
                        label, len(series), need)
        for step in sorted({t for s in series for t in s}):
            values = _values_at(series, step, align)
            if values and len(values) >= need:
                lo, hi = bootstrap_ci(values, confidence=confidence, n_resamples=n_resamples, seed=(seed, step))
                points.append(CurvePoint(step, iqm(values), lo, hi, len(values)))
        table[label] = points
    if not any(table.values()):
        raise ConfigError(f"nothing to plot: no env_step has eval lines from enough seeds in "
                          f"{[str(r) for rs in groups.values() for r in rs]}; train with evaluation on, "
                          "or lower min_seeds")
    return table


def _values_at(series: list[dict[int, float]], step: int, align: str) -> list[float]:
    if align in ("common", "snap"):  # snapped series are keyed by their multiples already
        return [s[step] for s in series if step in s]
    if align == "interpolate":
        out = []
        for s in series:
            steps = list(s)
            if steps[0] <= step <= steps[-1]:
                out.append(float(np.interp(step, steps, list(s.values()))))
        return out
    raise ConfigError(f"align must be one of {ALIGNS}, got {align!r}")


_LOG_AXIS_SPAN = 5.0
"""x_scale="auto" goes logarithmic when the longest curve ends this many times later than the shortest."""


def x_axis_scale(table: Mapping[str, Sequence[CurvePoint]],
                 x_scale: Literal["auto", "linear", "log"] = "auto") -> tuple[str, float | None]:
    """("linear", None) or ("symlog", linthresh): symlog is linear from 0 to linthresh, the first
    evaluation after 0, and logarithmic beyond."""
    if x_scale not in ("auto", "linear", "log"):
        raise ConfigError(f"x_scale must be 'auto', 'linear' or 'log', got {x_scale!r}")
    ends = [points[-1].env_step for points in table.values() if points]
    positive = [p.env_step for points in table.values() for p in points if p.env_step > 0]
    if x_scale == "linear" or not positive:
        return "linear", None
    if x_scale == "auto" and max(ends) < _LOG_AXIS_SPAN * max(min(ends), 1):
        return "linear", None
    return "symlog", float(min(positive))


def _steps_label(x: float) -> str:
    """Env steps in three significant digits: 10004 → "10k", 300032 → "300k", 1.5e6 → "1.5M"."""
    if x >= 1e6:
        return f"{x / 1e6:.3g}M"
    return f"{x / 1000:.3g}k" if x >= 1000 else f"{x:.3g}"


def _log_ticks(first: float, last: float) -> list[float]:
    """0, first, then 1-2-5 steps per decade up to last, and last itself."""
    ticks = [0.0, first]
    decade = 10.0 ** np.floor(np.log10(first))
    while decade <= last:
        ticks += [m * decade for m in (1, 2, 5) if first < m * decade < last / 1.6]  # clear of last's label
        decade *= 10
    return sorted(set(ticks + [float(last)]))


def draw_success(table: Mapping[str, Sequence[CurvePoint]], out_png: str | Path, *, title: str | None = None,
                 confidence: float = 0.95, references: Mapping[str, float] | None = None,
                 x_scale: Literal["auto", "linear", "log"] = "auto") -> Path:
    """Write the curves as a PNG (matplotlib Agg, no display); returns its path. Atomic replace.
    `references`: labelled horizontal lines (e.g. {"base policy": 0.23}); `x_scale` as in PlotConfig."""
    # Figure + Agg canvas, not pyplot: no global backend switch and no figure registry to leak.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.5), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, points in table.items():
        if not points:
            continue
        steps = [p.env_step for p in points]
        (line,) = ax.plot(steps, [p.iqm for p in points], marker="o" if len(points) < 30 else None, markersize=3,
                          label=f"{label} ({_seeds(max(p.n_seeds for p in points))})")
        if len(points) == 1:  # a band needs two x values: show the interval as an error bar
            p = points[0]
            ax.errorbar(steps, [p.iqm], yerr=[[p.iqm - p.lo], [p.hi - p.iqm]], color=line.get_color(), capsize=4)
        else:
            ax.fill_between(steps, [p.lo for p in points], [p.hi for p in points], color=line.get_color(), alpha=0.2,
                            linewidth=0)
    for label, value in (references or {}).items():
        ax.axhline(value, color="0.4", linestyle="--", linewidth=1.0, label=f"{label} ({value:.2f})")
    scale, linthresh = x_axis_scale(table, x_scale)
    if scale == "symlog":
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

        ax.set_xscale("symlog", linthresh=linthresh, linscale=0.5)
        ax.set_xlim(left=0)
        ax.xaxis.set_major_locator(FixedLocator(_log_ticks(linthresh, max(p.env_step for ps in table.values() for p in ps))))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _steps_label(x)))
    ax.set_xlabel("environment steps (env_step)" + (f", log scale beyond {_steps_label(linthresh)}" if scale == "symlog" else ""))
    ax.set_ylabel("success rate (fraction of eval episodes)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    ax.set_title(title or f"Success rate: IQM over seeds, {confidence:.0%} stratified bootstrap CI")
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as f:
        fig.savefig(f, format="png")
    return out


def plot_success(runs: Sequence[str | Path], out_png: str | Path, *, label_by: Literal["name", "config"] = "name",
                 labels: Sequence[str] | None = None, ignore_keys: Sequence[str] = ("seed", "name", "resume"),
                 align: Literal["common", "interpolate", "snap"] = "common", min_seeds: int | None = None,
                 confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0,
                 title: str | None = None, references: Mapping[str, float] | None = None,
                 x_scale: Literal["auto", "linear", "log"] = "auto") -> dict[str, list[CurvePoint]]:
    """Group runs into curves, compute IQM and bootstrap bands per eval env_step, write the PNG.

    Options as in PlotConfig; grouping and alignment rules in the module docstring.

    Returns:
        Curve label -> list of CurvePoint(env_step, iqm, lo, hi, n_seeds), sorted by env_step.

    Raises:
        ConfigError: a run folder without metrics.jsonl, bad labels, or nothing to plot.
    """
    groups = group_runs(runs, label_by=label_by, labels=labels, ignore_keys=ignore_keys)
    table = success_curves(groups, align=align, min_seeds=min_seeds, confidence=confidence,
                           n_resamples=n_resamples, seed=seed)
    draw_success(table, out_png, title=title, confidence=confidence, references=references, x_scale=x_scale)
    return table


def run(cfg: PlotConfig) -> dict[str, Any]:
    """`robot-rl plot`: write cfg.out; returns a JSON-ready summary (out, groups, curves)."""
    groups = group_runs(cfg.runs, label_by=cfg.label_by, labels=cfg.labels, ignore_keys=cfg.ignore_keys)
    table = plot_success(cfg.runs, cfg.out, label_by=cfg.label_by, labels=cfg.labels, ignore_keys=cfg.ignore_keys,
                         align=cfg.align, min_seeds=cfg.min_seeds, confidence=cfg.confidence,
                         n_resamples=cfg.n_resamples, seed=cfg.seed, title=cfg.title, x_scale=cfg.x_scale)
    return {"out": str(Path(cfg.out)),
            "groups": {label: [str(p) for p in paths] for label, paths in groups.items()},
            "curves": {label: [p._asdict() for p in points] for label, points in table.items()}}


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"
