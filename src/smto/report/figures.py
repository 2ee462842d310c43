"""Figures of a benchmark report: Delta_m box plots, task weights, error bars, the gain
along a progression of settings.

Every figure is a fixed-size matplotlib ``Figure`` (a paper's column width, 8 pt fonts, no
pyplot and no display) saved as PNG (300 dpi) and PDF next to each other. Methods keep the
order in which they first appear in the input, so the caller decides it (a method list, or a
table's order), and each method keeps one colour across the panels of a figure. matplotlib is
imported only when a figure is drawn (``pip install 'smto[plots]'``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from smto._optional import require
from smto.errors import ConfigError
from smto.problems.delta_m import check_convention
from smto.report.smoothing import ema

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

COLUMN_WIDTH = 3.25  # inches: one column of a two-column paper
DOUBLE_WIDTH = 6.75  # inches: both columns (figures with two panels side by side)
HEIGHT = 2.4  # inches
DPI = 300
WEIGHTS_PREFIX = "weights."

_STYLE = {
    "font.size": 8,
    "axes.labelsize": 8,
    "axes.titlesize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 6,
    "lines.linewidth": 1.0,
    "axes.linewidth": 0.6,
    "pdf.fonttype": 42,  # embed TrueType fonts, as publishers require
    "ps.fonttype": 42,
}
_AXIS_LABELS = {"study": r"test $\Delta_m$ (%)", "elich": r"test $\Delta M$ (Elich et al.) (%)"}


def delta_m_axis_label(convention: str | None = "study") -> str:
    """The axis label of test Delta_m in ``convention`` (:mod:`smto.problems.delta_m`)."""
    return _AXIS_LABELS[check_convention(convention)]


_DELTA_M_QUANTITY = "delta_m"  # progression_frame's quantity of the Delta_m rows


def delta_m_boxplot(
    per_run: pd.DataFrame,
    out: Path,
    baseline: str = "Unit. Scal.",
    convention: str | None = "study",
) -> list[Path]:
    """One box of test Delta_m (in ``convention``) per method, with the baseline's median as
    a dashed line.

    ``per_run`` has one row per run with columns ``method`` (display name) and ``delta_m``
    (%). Boxes follow the order of first appearance; every run is drawn as a point on its box.
    Writes ``out.with_suffix(".png")`` and ``.pdf`` and returns both paths.
    """
    require_columns(per_run, ("method", "delta_m"), "per_run")
    with figure_style():
        return save_figure(_draw_delta_m_boxplot(per_run, baseline, convention), out)


def weights_plot(history: pd.DataFrame, out: Path, beta: float = 0.9) -> list[Path]:
    """A method's per-epoch task weights: the raw values (thin) and their EMA (thick).

    ``history`` has one row per run and epoch with columns ``epoch``, ``run_id`` and
    ``weights.<task>`` for one method. Each row is normalized to sum 1, the rows of an epoch are
    averaged over runs, and the EMA is m_0 = w_0, m_t = beta m_{t-1} + (1 - beta) w_t.
    """
    require_columns(history, ("epoch", "run_id"), "history")
    _weight_columns(history)
    if "method" in history.columns and history["method"].nunique() > 1:
        methods = sorted(map(str, history["method"].unique()))
        raise ConfigError(f"weights_plot draws one method; history holds {methods}")
    if not 0.0 <= beta < 1.0:
        raise ConfigError(f"beta must be in [0, 1), got {beta}")
    with figure_style():
        return save_figure(_draw_weights(history, beta), out)


def results_with_weights(
    per_run: pd.DataFrame,
    history: pd.DataFrame,
    out: Path,
    baseline: str = "Unit. Scal.",
    convention: str | None = "study",
) -> list[Path]:
    """The study's "results with weights" figure for a two-task problem.

    Left: the Delta_m box plot of :func:`delta_m_boxplot`. Right: per method and epoch, the
    distance from equal weights |w1/(w1+w2) - 0.5|, computed per run and then averaged over
    runs (so runs that favour opposite tasks do not cancel out). ``history`` has columns
    ``method``, ``run_id``, ``epoch`` and exactly two ``weights.<task>`` columns.
    """
    require_columns(per_run, ("method", "delta_m"), "per_run")
    require_columns(history, ("method", "run_id", "epoch"), "history")
    tasks = _weight_columns(history)
    if len(tasks) != 2:
        names = [c.removeprefix(WEIGHTS_PREFIX) for c in tasks]
        raise ConfigError(
            f"results_with_weights needs a problem with exactly two tasks; history has "
            f"{len(tasks)} ({names}). Use weights_plot for each method instead."
        )
    with figure_style():
        return save_figure(_draw_results_with_weights(per_run, history, baseline, convention), out)


def delta_m_errorbars(
    summary: pd.DataFrame, out: Path, convention: str | None = "study"
) -> list[Path]:
    """Mean test Delta_m (in ``convention``) per method with asymmetric error bars from
    ``ci_low`` to ``ci_high``.

    ``summary`` has one row per method with columns ``method``, ``mean``, ``ci_low``,
    ``ci_high`` (%). A method whose interval is undefined (NaN, e.g. a single seed) is drawn
    without a bar. A solid grey line marks Delta_m = 0 (the single-task references).
    """
    require_columns(summary, ("method", "mean", "ci_low", "ci_high"), "summary")
    bad = summary[(summary["ci_low"] > summary["mean"]) | (summary["ci_high"] < summary["mean"])]
    if len(bad):
        raise ConfigError(
            f"the interval [ci_low, ci_high] must contain the mean; it does not for "
            f"{list(map(str, bad['method']))}"
        )
    with figure_style():
        return save_figure(_draw_errorbars(summary, convention), out)


def progression_plot(frame: pd.DataFrame, out: Path) -> list[Path]:
    """The gain of one method over a baseline along a sequence of steps (the main study's
    Fig. 3b): Delta_m (thick) and each task's relative gain (thin), in percentage points, with
    error bars of +-``gain_se``.

    ``frame`` is ``smto.evaluation.progression.progression_frame``'s: one row per step and
    quantity with columns ``step``, ``quantity`` ("delta_m" or a task), ``method`` and
    ``baseline`` (display names, one of each), ``gain`` and ``gain_se``. Steps keep their
    order of first appearance; a task absent from a step has no point there, and an undefined
    ``gain_se`` (NaN, e.g. a single seed) no bar. A solid grey line marks a gain of 0; the
    title reads "gain of <method> over <baseline>".
    """
    require_columns(frame, ("step", "quantity", "method", "baseline", "gain", "gain_se"), "frame")
    for column in ("method", "baseline"):
        if frame[column].nunique() != 1:
            raise ConfigError(
                f"progression_plot draws one method against one baseline; {column} holds "
                f"{sorted(map(str, frame[column].unique()))}"
            )
    repeated = frame[frame.duplicated(["step", "quantity"])]
    if len(repeated):
        pairs = sorted({(str(s), str(q)) for s, q in zip(repeated["step"], repeated["quantity"])})
        raise ConfigError(f"frame has several rows of one step and quantity: {pairs}")
    with figure_style():
        return save_figure(_draw_progression(frame), out)


def _draw_delta_m_boxplot(
    per_run: pd.DataFrame, baseline: str, convention: str | None = "study"
) -> Figure:
    methods = ordered(per_run["method"])
    fig = new_figure(COLUMN_WIDTH)
    ax = fig.add_subplot()
    _boxplot(ax, per_run, methods, color_map(methods), baseline, convention)
    return fig


def _draw_weights(history: pd.DataFrame, beta: float) -> Figure:
    from matplotlib.lines import Line2D

    history = history.reset_index(drop=True)  # concatenated histories repeat index labels
    columns = _weight_columns(history)
    means = _normalized(history, columns).groupby(history["epoch"]).mean().sort_index()
    colors = color_map(columns)
    fig = new_figure(COLUMN_WIDTH)
    ax = fig.add_subplot()
    epochs = means.index.to_numpy()
    for column in columns:
        raw = means[column].to_numpy(dtype=float)
        task = column.removeprefix(WEIGHTS_PREFIX)
        color = colors[column]
        ax.plot(epochs, raw, color=color, lw=0.6, alpha=0.6, gid=f"raw:{task}")
        ax.plot(epochs, ema(raw, beta), color=color, lw=1.6, label=task, gid=f"ema:{task}")
    handles, _ = ax.get_legend_handles_labels()
    handles += [
        Line2D([], [], color="0.4", lw=0.6, label="per epoch"),
        Line2D([], [], color="0.4", lw=1.6, label=rf"EMA ($\beta$ = {beta:g})"),
    ]
    ax.legend(handles=handles, ncols=2 if len(handles) > 4 else 1, frameon=False)
    ax.set_xlabel("epoch")
    ax.set_ylabel("task weight (sum 1)")
    return fig


def _draw_results_with_weights(
    per_run: pd.DataFrame,
    history: pd.DataFrame,
    baseline: str,
    convention: str | None = "study",
) -> Figure:
    methods = ordered(list(per_run["method"]) + list(history["method"]))
    colors = color_map(methods)
    fig = new_figure(DOUBLE_WIDTH)
    box_ax, weight_ax = fig.subplots(1, 2)
    _boxplot(box_ax, per_run, ordered(per_run["method"]), colors, baseline, convention)
    history = history.reset_index(drop=True)
    columns = _weight_columns(history)
    first = _normalized(history, columns)[columns[0]]
    frame = history.loc[first.index, ["method", "epoch"]].astype({"method": str})
    frame["distance"] = (first - 0.5).abs()
    curves = frame.groupby(["method", "epoch"])["distance"].mean()
    for method in methods:
        if method not in curves.index.get_level_values("method"):
            continue
        curve = curves.loc[method].sort_index()
        weight_ax.plot(
            curve.index.to_numpy(),
            curve.to_numpy(dtype=float),
            color=colors[method],
            label=method,
            gid=f"imbalance:{method}",
        )
    w1, w2 = (_math_name(c.removeprefix(WEIGHTS_PREFIX)) for c in columns)
    weight_ax.set_xlabel("epoch")
    weight_ax.set_ylabel(rf"$|w_{{{w1}}}\,/\,(w_{{{w1}}} + w_{{{w2}}}) - 0.5|$")
    weight_ax.set_ylim(bottom=0.0)
    weight_ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _draw_errorbars(summary: pd.DataFrame, convention: str | None = "study") -> Figure:
    methods = [str(m) for m in summary["method"]]
    colors = color_map(ordered(methods))
    fig = new_figure(COLUMN_WIDTH)
    ax = fig.add_subplot()
    ax.axhline(0.0, color="0.6", lw=0.6, zorder=0, gid="zero")
    mean = summary["mean"].to_numpy(dtype=float)
    below = np.nan_to_num(mean - summary["ci_low"].to_numpy(dtype=float))
    above = np.nan_to_num(summary["ci_high"].to_numpy(dtype=float) - mean)
    for i, method in enumerate(methods):
        ax.errorbar(
            [i + 1],
            [mean[i]],
            yerr=[[below[i]], [above[i]]],
            fmt="o",
            ms=3,
            capsize=2,
            lw=0.8,
            color=colors[method],
            gid=f"errorbar:{method}",
        )
    category_axis(ax, methods)
    ax.set_ylabel(delta_m_axis_label(convention) + ", mean and CI")
    return fig


def _draw_progression(frame: pd.DataFrame) -> Figure:
    steps = ordered(frame["step"])
    quantities = ordered(frame["quantity"])
    tasks = [q for q in quantities if q != _DELTA_M_QUANTITY]
    series = [q for q in quantities if q == _DELTA_M_QUANTITY] + tasks  # Delta_m first
    colors = {_DELTA_M_QUANTITY: "black", **color_map(tasks)}
    fig = new_figure(COLUMN_WIDTH)
    ax = fig.add_subplot()
    ax.axhline(0.0, color="0.6", lw=0.6, zorder=0, gid="zero")
    frame = frame.astype({"step": str, "quantity": str})
    for i, quantity in enumerate(series):
        rows = frame[frame["quantity"] == quantity].set_index("step").reindex(steps)
        thick = quantity == _DELTA_M_QUANTITY
        dodge = (i - (len(series) - 1) / 2) * 0.06  # keeps the bars of one step apart
        ax.errorbar(
            np.arange(1, len(steps) + 1) + dodge,
            rows["gain"].to_numpy(dtype=float),
            yerr=np.nan_to_num(rows["gain_se"].to_numpy(dtype=float)),
            fmt="o-",
            ms=3 if thick else 2,
            capsize=2,
            lw=1.6 if thick else 0.8,
            elinewidth=0.8 if thick else 0.6,
            color=colors[quantity],
            label=r"$\Delta_m$" if thick else quantity,
            gid=f"gain:{quantity}",
            zorder=3 if thick else 2,
        )
    category_axis(ax, steps)
    ax.set_title(f"gain of {frame['method'].iloc[0]} over {frame['baseline'].iloc[0]}")
    ax.set_ylabel("gain (percentage points)")
    ax.legend(frameon=False, ncols=2 if len(series) > 3 else 1)
    return fig


def _boxplot(
    ax: Axes,
    per_run: pd.DataFrame,
    methods: Sequence[str],
    colors: dict[str, Any],
    baseline: str,
    convention: str | None,
) -> None:
    """Boxes (no fliers: every run is drawn as a point) and the baseline's median, dashed."""
    names = per_run["method"].astype(str)
    values = [_finite(per_run.loc[names == m, "delta_m"]) for m in methods]
    positions = np.arange(1, len(methods) + 1)
    boxes = ax.boxplot(
        values,
        positions=positions,
        widths=0.6,
        showfliers=False,
        patch_artist=True,
        medianprops={"color": "black", "lw": 1.0},
        whiskerprops={"lw": 0.6},
        capprops={"lw": 0.6},
        boxprops={"lw": 0.6},
    )
    for patch, method in zip(boxes["boxes"], methods):
        patch.set_facecolor(colors[method])
        patch.set_alpha(0.55)
    for x, v in zip(positions, values):
        ax.plot(np.full(len(v), x), v, ".", color="0.15", ms=2.0, zorder=3)
    if baseline in methods:
        median = float(np.median(values[methods.index(baseline)]))
        ax.axhline(median, color="0.3", lw=0.8, ls="--", zorder=1, gid="baseline-median")
    category_axis(ax, methods)
    ax.set_ylabel(delta_m_axis_label(convention))


def category_axis(ax: Axes, methods: Sequence[str]) -> None:
    """Ticks 1..n labelled by ``methods`` (rotated beyond four), the x-axis of one-per-method
    figures."""
    ax.set_xticks(np.arange(1, len(methods) + 1), labels=list(methods))
    ax.set_xlim(0.4, len(methods) + 0.6)
    if len(methods) > 4:
        ax.tick_params(axis="x", labelrotation=45)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")


def _normalized(history: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Each row's weights divided by their sum; rows with a missing weight are dropped."""
    weights = history[columns].astype(float).dropna()
    if weights.empty:
        raise ConfigError("history has no epoch with all task weights recorded")
    totals = weights.sum(axis=1)
    if not (np.isfinite(totals) & (totals != 0)).all():
        raise ConfigError("task weights must have a finite, non-zero sum in every epoch")
    return weights.div(totals, axis=0)


def _weight_columns(history: pd.DataFrame) -> list[str]:
    columns = [c for c in history.columns if str(c).startswith(WEIGHTS_PREFIX)]
    if not columns:
        raise ConfigError(
            f"history has no '{WEIGHTS_PREFIX}<task>' columns (columns: {list(history.columns)});"
            " load it with smto.train.load_runs"
        )
    return columns


def require_columns(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    """A ConfigError naming what ``frame`` (called ``name``) lacks of ``columns``."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"{name} lacks the columns {missing} (needs {list(columns)}, has {list(frame.columns)})"
        )
    if frame.empty:
        raise ConfigError(f"{name} is empty: there is nothing to plot")


def _finite(values: pd.Series) -> np.ndarray:
    array = values.to_numpy(dtype=float)
    return array[np.isfinite(array)]


def _math_name(name: str) -> str:
    """A task name set upright inside mathtext, its special characters escaped."""
    escaped = "".join(f"\\{c}" if c in "_%$#&{}" else c for c in name)
    return rf"\mathrm{{{escaped}}}"


def ordered(values: Sequence[Any] | pd.Series) -> list[str]:
    """The distinct values as strings, in order of first appearance."""
    return list(dict.fromkeys(str(v) for v in values))


def color_map(keys: Sequence[str]) -> dict[str, Any]:
    """One colour per key, in order: tab10 up to 10 keys; beyond, tab20's dark shades first.

    Beyond 20 keys the colours repeat.
    """
    from matplotlib import colormaps

    if len(keys) <= 10:
        palette = list(colormaps["tab10"].colors)
    else:
        tab20 = colormaps["tab20"].colors
        palette = list(tab20[0::2]) + list(tab20[1::2])
    return {key: palette[i % len(palette)] for i, key in enumerate(keys)}


def new_figure(width: float) -> Figure:
    """A figure ``width`` inches wide on its own Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, HEIGHT), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out: Path) -> list[Path]:
    """Writes ``out`` as .png and .pdf and returns both paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_suffix(".png"), out.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=DPI)
    return paths


@contextmanager
def figure_style() -> Iterator[None]:
    """The report's font sizes, set for one figure only (the global rcParams stay untouched)."""
    matplotlib = require("matplotlib", "plots", "smto.report.figures")
    with matplotlib.rc_context(_STYLE):
        yield
