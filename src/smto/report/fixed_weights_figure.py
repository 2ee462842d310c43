"""The spread of fixed-weights results across source configurations (the main study's Fig.
5): the study extracts fixed weights from each lr of a method's grid (and for QM9 from a
non-optimal one, the optimal being unstable) and shows how much the fixed-weights runs' test
Delta_m varies with the source, beside the source configuration's own result.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from smto.errors import ConfigError
from smto.report.figures import COLUMN_WIDTH, figure_style, new_figure, require_columns, save_figure

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

KINDS = ("fixed", "source")
"""The kinds of rows: a fixed-weights run, or a run of the source configuration itself."""


def fixed_weights_spread(
    frame: pd.DataFrame, out: Path, label: str = r"test $\Delta_m$ (%)"
) -> list[Path]:
    """Per source configuration (x, in order of appearance), every fixed-weights run's test
    Delta_m (dots) with their mean (a bar), and the source configuration's own runs' mean
    (a diamond) beside it.

    ``frame`` has one row per run with columns ``source`` (the source's label, e.g.
    "lr=0.001"), ``kind`` (:data:`KINDS`) and ``delta_m``; ``label`` names the y axis (the
    Delta_m convention). Writes ``out`` as PNG and PDF and returns both paths.
    """
    require_columns(frame, ("source", "kind", "delta_m"), "frame")
    kinds = sorted(set(map(str, frame["kind"])) - set(KINDS))
    if kinds:
        raise ConfigError(f"unknown kind(s) {kinds}; rows are of kind {', '.join(KINDS)}")
    if not (frame["kind"] == "fixed").any():
        raise ConfigError("no fixed-weights runs to draw (no row of kind 'fixed')")
    with figure_style():
        return save_figure(_draw(frame, label), out)


def _draw(frame: pd.DataFrame, label: str) -> Figure:
    sources = list(dict.fromkeys(map(str, frame["source"])))
    fig = new_figure(COLUMN_WIDTH)
    ax = fig.add_subplot()
    names = frame["source"].astype(str)
    for i, source in enumerate(sources, start=1):
        rows = frame[names == source]
        fixed = _finite(rows.loc[rows["kind"] == "fixed", "delta_m"])
        own = _finite(rows.loc[rows["kind"] == "source", "delta_m"])
        if len(fixed):
            ax.plot(
                np.full(len(fixed), i - 0.1), fixed, ".", color="C0", ms=3, gid=f"fixed:{source}"
            )
            ax.hlines(
                fixed.mean(), i - 0.25, i + 0.05, color="C0", lw=1.2, gid=f"fixed-mean:{source}"
            )
        if len(own):
            ax.plot([i + 0.15], [own.mean()], "D", color="C3", ms=3.5, gid=f"source:{source}")
    ax.axhline(0.0, color="0.6", lw=0.6, zorder=0)
    ax.set_xticks(np.arange(1, len(sources) + 1), labels=sources)
    ax.set_xlim(0.4, len(sources) + 0.6)
    ax.set_xlabel("source configuration of the fixed weights")
    ax.set_ylabel(label)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker=".", ls="", color="C0", label="fixed weights (runs, mean)"),
        Line2D([], [], marker="D", ls="", color="C3", ms=3.5, label="source configuration"),
    ]
    ax.legend(handles=handles, frameon=False, loc="best")
    return fig


def _finite(values: pd.Series) -> np.ndarray:
    array = values.to_numpy(dtype=float)
    return array[np.isfinite(array)]
