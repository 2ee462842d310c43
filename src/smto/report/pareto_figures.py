"""The figures of Elich et al.'s optimizer study, from the frames of
``smto.evaluation.pareto.OptimizerStudy``:

- :func:`parallel_coordinates` (their Figs. 2 and A4): one vertical axis per metric, each
  min-max normalized over the configurations with the better end up, one line per
  configuration coloured by optimizer, the Pareto-optimal ones bold;
- :func:`paired_delta_m_plot` (their Fig. A3): per method, the test Delta_m of its best
  configuration with each of two optimizers (Adam and SGD), bars side by side with the std
  over seeds.

Figures follow :mod:`smto.report.figures` (fixed size, 8 pt fonts, PNG and PDF side by
side); ``draw_*`` returns the matplotlib ``Figure`` without saving it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from smto.errors import ConfigError
from smto.report.figures import (
    COLUMN_WIDTH,
    DOUBLE_WIDTH,
    category_axis,
    color_map,
    figure_style,
    new_figure,
    ordered,
    require_columns,
    save_figure,
)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

BOLD = 1.8
"""The line width of a Pareto-optimal configuration."""
THIN = 0.6
"""The line width of the others."""
LINE_PREFIX = "configuration:"
"""The gid prefix of a configuration's line (then its row position in the frame)."""

_LABEL_BOX = {"facecolor": "white", "edgecolor": "none", "pad": 0.8}
"""The raw values at an axis's ends sit on a white box over the axis line."""
Axis = tuple[str, str, bool]
"""(frame column, axis label, higher is better) of one metric."""


def draw_parallel_coordinates(
    frame: pd.DataFrame, axes: Sequence[Axis], title: str | None = None
) -> Figure:
    """The parallel-coordinates figure (see :func:`parallel_coordinates`), not saved."""
    require_columns(frame, ("optimizer", "pareto", *(column for column, _, _ in axes)), "frame")
    if len(axes) < 2:
        raise ConfigError(
            f"a parallel-coordinates figure needs two metrics or more, got {len(axes)}"
        )
    values = frame[[column for column, _, _ in axes]].to_numpy(dtype=float)
    drawn = np.isfinite(values).any(axis=1)
    if not drawn.any():
        raise ConfigError("no configuration has a finite value to draw")
    normalized = np.full_like(values, np.nan)
    fig = new_figure(DOUBLE_WIDTH)
    ax = fig.add_subplot()
    x = np.arange(len(axes))
    for j, (_, label, higher) in enumerate(axes):
        column = values[drawn, j]
        finite = column[np.isfinite(column)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        span = high - low
        scaled = (values[:, j] - low) / span if span > 0 else np.full(len(values), 0.5)
        normalized[:, j] = scaled if higher else 1.0 - scaled
        ax.axvline(j, color="0.3", lw=0.6, zorder=1, gid=f"axis:{label}")
        best, worst = (high, low) if higher else (low, high)
        ax.text(j, 1.03, f"{best:.4g}", ha="center", va="bottom", fontsize=6, bbox=_LABEL_BOX)
        ax.text(j, -0.03, f"{worst:.4g}", ha="center", va="top", fontsize=6, bbox=_LABEL_BOX)
    optimizers = ordered(frame["optimizer"])
    colors = color_map(optimizers)
    pareto = frame["pareto"].to_numpy(dtype=bool)
    for i, optimizer in enumerate(frame["optimizer"].astype(str)):
        if not drawn[i]:
            continue
        bold = bool(pareto[i])
        ax.plot(
            x,
            normalized[i],
            color=colors[optimizer],
            lw=BOLD if bold else THIN,
            alpha=1.0 if bold else 0.5,
            zorder=3 if bold else 2,
            gid=f"{LINE_PREFIX}{i}",
        )
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[o], lw=BOLD, label=o) for o in optimizers]
    handles.append(Line2D([], [], color="black", lw=BOLD, label="Pareto optimal"))
    handles.append(Line2D([], [], color="black", lw=THIN, alpha=0.5, label="dominated"))
    ax.legend(handles=handles, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_xticks(x, labels=[f"{label} {'↑' if higher else '↓'}" for _, label, higher in axes])
    if len(axes) > 6:
        ax.tick_params(axis="x", labelrotation=30)
    ax.set_xlim(-0.3, len(axes) - 0.7)
    ax.set_ylim(-0.15, 1.15)
    ax.set_yticks([0.0, 1.0], labels=["worst", "best"])
    ax.set_ylabel("normalized value")
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title)
    return fig


def parallel_coordinates(
    frame: pd.DataFrame, axes: Sequence[Axis], out: Path, title: str | None = None
) -> list[Path]:
    """Their Figs. 2 and A4: one vertical axis per metric of ``axes`` ((column, label, higher
    is better)), each min-max normalized over the configurations so that the better end is
    up (the raw best and worst values are written at its ends), one line per row of
    ``frame`` coloured by its ``optimizer``, bold where ``pareto`` is true. A row without a
    value is not drawn. Writes ``out``.png and .pdf and returns both paths."""
    with figure_style():
        return save_figure(draw_parallel_coordinates(frame, axes, title), out)


def draw_paired_delta_m(
    paired: pd.DataFrame,
    delta_m_label: str,
    higher_is_better: bool,
    names: tuple[str, str] | None = None,
) -> Figure:
    """The paired Delta_m figure (see :func:`paired_delta_m_plot`), not saved."""
    columns = ("method", "delta_m_first", "std_first", "delta_m_second", "std_second")
    require_columns(paired, columns, "paired")
    if names is None:
        names = (str(paired["first"].iloc[0]), str(paired["second"].iloc[0]))
    methods = [str(m) for m in paired["method"]]
    fig = new_figure(COLUMN_WIDTH)
    ax = fig.add_subplot()
    ax.axhline(0.0, color="0.6", lw=0.6, zorder=0, gid="zero")
    colors = color_map(list(names))
    positions = np.arange(1, len(methods) + 1)
    width = 0.38
    for offset, which, name in ((-width / 2, "first", names[0]), (width / 2, "second", names[1])):
        ax.bar(
            positions + offset,
            paired[f"delta_m_{which}"].to_numpy(dtype=float),
            width=width,
            yerr=np.nan_to_num(paired[f"std_{which}"].to_numpy(dtype=float)),
            capsize=1.5,
            error_kw={"lw": 0.6},
            color=colors[name],
            label=name,
            gid=f"bar:{name}",
        )
    category_axis(ax, methods)
    direction = "higher" if higher_is_better else "lower"
    ax.set_ylabel(f"test {delta_m_label} (%), {direction} is better")
    ax.legend(frameon=False)
    return fig


def paired_delta_m_plot(
    paired: pd.DataFrame,
    out: Path,
    delta_m_label: str,
    higher_is_better: bool,
    names: tuple[str, str] | None = None,
) -> list[Path]:
    """Their Fig. A3: per method (a row of ``paired``, ``OptimizerStudy.paired()``'s frame),
    two bars side by side: the mean test Delta_m of its best configuration with the first
    and with the second optimizer, each with +- its std over seeds; a grey line at 0 (the
    single-task references). ``names`` labels the two optimizers (default: the frame's
    ``first`` and ``second``). Writes ``out``.png and .pdf and returns both paths."""
    with figure_style():
        return save_figure(draw_paired_delta_m(paired, delta_m_label, higher_is_better, names), out)
