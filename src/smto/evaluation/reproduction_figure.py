"""The figure of ``smto reproduce``: per method, the published value beside our mean and 95 %
interval, one panel per quantity (Delta_m first, then each task's gain)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from smto._optional import require
from smto.evaluation.published import DELTA_M
from smto.evaluation.reproduction import QUICK_NOTE, Comparison
from smto.report.figures import DPI, save_figure

PANEL_WIDTH = 3.3
"""Inches per panel (a paper's column)."""


def comparison_figure(comparison: Comparison, out: str | os.PathLike[str]) -> list[Path]:
    """Draws ``comparison`` and saves it as ``out`` .png and .pdf; returns the paths. Our
    runs are a dot with the interval as a bar, the published value a cross; a quick run says
    in the title that its numbers are not comparable."""
    require("matplotlib", "plots", "the figure of smto reproduce")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    quantities = [DELTA_M, *(q for q in comparison.quantities if q != DELTA_M)]
    names = [r.name for r in comparison.rows_of(DELTA_M)]
    height = 1.0 + 0.22 * max(len(names), 1)
    fig = Figure(figsize=(PANEL_WIDTH * len(quantities), height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(quantities), sharey=True, squeeze=False)[0]
    for ax, quantity in zip(axes, quantities):
        rows = comparison.rows_of(quantity)
        ys = list(range(len(rows)))
        for y, row in zip(ys, rows):
            if math.isfinite(row.low) and math.isfinite(row.high):
                ax.plot([row.low, row.high], [y, y], color="tab:blue", linewidth=1.5)
            ax.plot([row.mean], [y], "o", color="tab:blue", markersize=3.5)
            if row.published is not None:
                colour = "tab:red" if row.outside else "black"
                ax.plot([row.published], [y], "x", color=colour, markersize=4.5)
        ax.set_yticks(ys, [r.name for r in rows], fontsize=7)
        ax.invert_yaxis()
        ax.axvline(0.0, color="0.8", linewidth=0.8, zorder=0)
        title = "Δm (%)" if quantity == DELTA_M else f"{quantity} gain (%)"
        ax.set_title(title, fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    heading = f"{comparison.problem}: smto (dot, 95 % interval) vs published (x; red: outside)"
    if comparison.quick:
        heading += f"\n{QUICK_NOTE}"
    fig.suptitle(heading, fontsize=7)
    return save_figure(fig, Path(out))
