"""Figures of the gradient probes (:mod:`smto.train.probes`):

- :func:`conflicts_figure`: Elich et al.'s Fig. 4 layout, epochs on x, one row per measure,
  the inter-task and the inter-sample pairs as a line (the epoch's mean) over a band (its
  2.5 to 97.5 percentiles); with other measures or ``averaged`` their Figs. A5 (averaged
  gradients), A6 (conflicting and supporting pairs apart) and A7 (the scalar product);
- :func:`cosine_gap_scatter`: the main study's Fig. 7 (and 3a), one point per problem, the
  mean cosine of the task gradients to their mean against the gap between Unit. Scal. and the
  best SMTO.

Figures follow :mod:`smto.report.figures` (8 pt fonts, PNG and PDF side by side);
``draw_*`` returns the matplotlib ``Figure`` without saving it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from smto.errors import ConfigError
from smto.report.figures import (
    COLUMN_WIDTH,
    DPI,
    figure_style,
    new_figure,
    require_columns,
    save_figure,
)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

PREFIX = "probes."
FAMILIES = ("inter_task", "inter_sample")
FIG4_MEASURES = ("cosine", "magnitude", "conflict_ratio")
"""Elich et al.'s Fig. 4 columns: cosine, magnitude similarity, conflicting parameters."""
FIG_A6_MEASURES = ("cosine_conflicting", "cosine_supporting")
FIG_A7_MEASURES = ("dot",)
LABELS = {
    "cosine": "cosine similarity",
    "magnitude": "magnitude similarity",
    "conflict_ratio": "conflicting params",
    "dot": "scalar product",
    "cosine_conflicting": "cosine (cos < 0)",
    "cosine_supporting": "cosine (cos ≥ 0)",
}
FAMILY_LABELS = {"inter_task": "inter-task", "inter_sample": "inter-sample"}
FAMILY_COLORS = {"inter_task": "tab:blue", "inter_sample": "tab:red"}  # as Elich et al.
ROW_HEIGHT = 1.25  # inches per measure


def conflicts_figure(
    epochs: pd.DataFrame,
    out: Path,
    measures: Sequence[str] = FIG4_MEASURES,
    averaged: bool = False,
    title: str | None = None,
) -> list[Path]:
    """Inter-task against inter-sample pairs over epochs, one row per measure.

    ``epochs`` has one row per run and epoch (``load_runs``' second frame, or
    ``smto.evaluation.report.probe_frame``) with ``epoch`` and the probe columns
    ``probes.<family>.<measure>.{mean,p2_5,p97_5}``; the runs of an epoch (seeds) are
    averaged. ``averaged`` draws the pairs of averaged gradients (``<family>_averaged``: Fig.
    A5). A family without values (inter-task pairs of a single-task run) is left out.
    Writes ``out.with_suffix(".png")`` and ``.pdf`` and returns both paths.
    """
    with figure_style():
        return save_figure(draw_conflicts(epochs, measures, averaged, title), out)


def draw_conflicts(
    epochs: pd.DataFrame,
    measures: Sequence[str] = FIG4_MEASURES,
    averaged: bool = False,
    title: str | None = None,
) -> Figure:
    """The figure of :func:`conflicts_figure`, unsaved."""
    require_columns(epochs, ("epoch",), "epochs")
    if not measures:
        raise ConfigError("conflicts_figure needs at least one measure")
    suffix = "_averaged" if averaged else ""
    curves = {
        (family, measure): _band(epochs, f"{PREFIX}{family}{suffix}.{measure}")
        for measure in measures
        for family in FAMILIES
    }
    if all(curve is None for curve in curves.values()):
        wanted = [f"{PREFIX}<family>{suffix}.{m}.mean" for m in measures]
        raise ConfigError(f"epochs has no probe values to draw: it needs columns such as {wanted}")
    fig = new_figure(COLUMN_WIDTH)
    fig.set_size_inches(COLUMN_WIDTH, ROW_HEIGHT * len(measures) + 0.4)
    fig.set_dpi(DPI)
    axes = fig.subplots(len(measures), 1, sharex=True, squeeze=False)[:, 0]
    for ax, measure in zip(axes, measures):
        for family in FAMILIES:
            curve = curves[family, measure]
            if curve is None:
                continue
            x, mean, low, high = curve
            color = FAMILY_COLORS[family]
            gid = f"{family}{suffix}:{measure}"
            label = FAMILY_LABELS[family] + (" (averaged)" if averaged else "")
            ax.fill_between(x, low, high, color=color, alpha=0.25, lw=0, gid=f"band:{gid}")
            ax.plot(x, mean, color=color, label=label, gid=f"mean:{gid}")
        ax.set_ylabel(LABELS.get(measure, measure))
    axes[0].legend(frameon=False, ncols=2)
    axes[-1].set_xlabel("epoch")
    if title:
        axes[0].set_title(title)
    return fig


def has_pairs(epochs: pd.DataFrame, averaged: bool = False) -> bool:
    """Whether ``epochs`` holds inter-task or inter-sample values to draw (a probe with its
    pairs on; a cosine-only probe has none)."""
    suffix = "_averaged" if averaged else ""
    stems = [f"{PREFIX}{family}{suffix}.{m}" for family in FAMILIES for m in FIG4_MEASURES]
    return any(_band(epochs, stem) is not None for stem in stems)


def _band(
    epochs: pd.DataFrame, stem: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The epochs and the per-epoch mean over runs of ``stem``'s mean, 2.5 and 97.5
    percentiles; None without values."""
    columns = [f"{stem}.{key}" for key in ("mean", "p2_5", "p97_5")]
    if not all(c in epochs.columns for c in columns):
        return None
    frame = epochs[["epoch", *columns]].astype(float).dropna()
    if frame.empty:
        return None
    per_epoch = frame.groupby("epoch").mean().sort_index()
    x = per_epoch.index.to_numpy(dtype=float)
    return x, *(per_epoch[c].to_numpy(dtype=float) for c in columns)


def cosine_gap_scatter(table: pd.DataFrame, out: Path) -> list[Path]:
    """One point per problem: its mean cosine to the mean gradient (the main study's
    metric on Unit. Scal. runs) against the gap in test Delta_m between Unit. Scal. and the
    best SMTO (percentage points), each point named; with three points or more, the
    least-squares line and Pearson's r (the study's Fig. 7: the lower the cosine, the more an
    SMTO gains).

    ``table`` has one row per problem with columns ``problem``, ``cosine`` and ``gap``.
    """
    with figure_style():
        return save_figure(draw_cosine_gap(table), out)


def draw_cosine_gap(table: pd.DataFrame) -> Figure:
    """The figure of :func:`cosine_gap_scatter`, unsaved."""
    require_columns(table, ("problem", "cosine", "gap"), "table")
    frame = table[["problem", "cosine", "gap"]].dropna()
    if frame.empty:
        raise ConfigError("cosine_gap_scatter needs at least one problem with a cosine and a gap")
    if frame["problem"].duplicated().any():
        repeated = sorted(map(str, frame["problem"][frame["problem"].duplicated()]))
        raise ConfigError(f"table has several rows of one problem: {repeated}")
    x, y = frame["cosine"].to_numpy(dtype=float), frame["gap"].to_numpy(dtype=float)
    fig = new_figure(COLUMN_WIDTH)
    ax = fig.add_subplot()
    ax.scatter(x, y, s=14, color="tab:blue", zorder=3, gid="problems")
    for name, xi, yi in zip(frame["problem"], x, y):
        ax.annotate(str(name), (xi, yi), xytext=(3, 3), textcoords="offset points", fontsize=6)
    if len(frame) >= 3 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        r = float(np.corrcoef(x, y)[0, 1])
        line = np.array([x.min(), x.max()])
        ax.plot(line, slope * line + intercept, color="0.5", lw=0.8, ls="--", label=f"r = {r:.2f}")
        ax.legend(frameon=False)
    ax.axhline(0.0, color="0.7", lw=0.6, zorder=1)
    ax.set_xlabel(r"mean cos($g_k$, mean gradient)")
    ax.set_ylabel(r"Unit. Scal. $-$ best SMTO, $\Delta_m$ (p.p.)")
    return fig
