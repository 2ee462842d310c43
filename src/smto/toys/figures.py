"""The toys' figures: Liu et al.'s CAGrad-toy panels and Elich et al.'s Fig. A1/A2 curves.

Each function returns a matplotlib ``Figure`` (built without pyplot, so nothing global
changes) that :func:`save` writes as PNG. matplotlib is imported when a figure is drawn
(``pip install 'smto[plots]'``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from smto import registry
from smto._optional import require
from smto.errors import ConfigError
from smto.toys.cagrad import loss_grid, minimum, pareto_set
from smto.toys.descent import Trajectory
from smto.toys.loss_scale import History

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PANEL = 2.2  # inches per panel
DPI = 150
_START_COLOURS = ("tab:blue", "tab:orange", "tab:green")
_RUN_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:olive")


def _figure(rows: int, columns: int) -> Figure:
    require("matplotlib", "plots", "smto.toys.figures")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(PANEL * columns, PANEL * rows * 0.9), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def cagrad_figure(
    trajectories: Mapping[tuple[str, str], Sequence[Trajectory]], lr: float | None = None
) -> Figure:
    """One panel per (method, optimizer): contours of the average loss, the Pareto set (grey),
    the global minimum (star) and the trajectory from each of the three starts (dots).

    ``trajectories`` maps (method, optimizer) to the trajectories of one learning rate, in
    the order of :data:`~smto.toys.cagrad.STARTS`; a row per method, a column per optimizer.
    """
    if not trajectories:
        raise ConfigError("no trajectories to draw")
    methods = list(dict.fromkeys(m for m, _ in trajectories))
    optimizers = list(dict.fromkeys(o for _, o in trajectories))
    fig = _figure(len(methods), len(optimizers))
    axes = fig.subplots(len(methods), len(optimizers), squeeze=False)
    x1, x2, values = loss_grid()
    pareto = pareto_set()
    best = minimum()
    for (method, optimizer), runs in trajectories.items():
        ax = axes[methods.index(method), optimizers.index(optimizer)]
        ax.contourf(x1, x2, values, levels=20, cmap="Greys", alpha=0.35)
        ax.contour(x1, x2, values, levels=20, colors="grey", linewidths=0.3)
        ax.plot(pareto[:, 0], pareto[:, 1], color="dimgrey", linewidth=2.5, label="Pareto set")
        for run, colour in zip(runs, _START_COLOURS):
            points = run.points
            ax.plot(points[:, 0], points[:, 1], color=colour, linewidth=0.9)
            ax.plot(*points[0], marker="o", color=colour, markersize=3)
        ax.plot(*best, marker="*", color="gold", markeredgecolor="k", markersize=8)
        ax.set_xlim(-10, 10)
        ax.set_ylim(-10, 10)
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        rate = f", lr {lr:g}" if lr is not None else ""
        ax.set_title(f"{registry.spec(method).display_name} + {optimizer}{rate}", fontsize=7)
    for ax in axes.flat:
        if not ax.has_data():
            fig.delaxes(ax)
    return fig


_HEAD_ROWS = (
    ("losses", "L1 loss"),
    ("weighted", "weighted loss"),
    ("head_grad", "|gradient|"),
    ("head_update", "|update|"),
)


def loss_scale_figure(pairs: Sequence[tuple[History, History]]) -> Figure:
    """Elich et al.'s Fig. A1 (backbone frozen) or A2 (trained), from :func:`experiment`.

    Rows: the losses, the losses as the method weighs them, the gradient and the update
    magnitudes; columns: head 1, head 2 and, when the backbone is trained, the backbone
    (gradient and update only). Each run has its colour, unscaled solid and scaled dotted.
    """
    if not pairs:
        raise ConfigError("no runs to draw")
    trained = pairs[0][0].train_backbone
    columns = 3 if trained else 2
    fig = _figure(len(_HEAD_ROWS), columns)
    axes = fig.subplots(len(_HEAD_ROWS), columns, squeeze=False)
    for (unscaled, scaled), colour in zip(pairs, _RUN_COLOURS):
        for history, style in ((unscaled, "-"), (scaled, ":")):
            label = f"{history.label} ({'scaled' if history.scaled else 'unscaled'})"
            steps = np.arange(1, len(history.losses) + 1)
            for row, (field, _) in enumerate(_HEAD_ROWS):
                values = getattr(history, field)
                for task in range(2):
                    axes[row, task].plot(
                        steps, values[:, task], linestyle=style, color=colour, label=label
                    )
            if trained:
                axes[2, 2].plot(steps, history.backbone_grad, linestyle=style, color=colour)
                axes[3, 2].plot(steps, history.backbone_update, linestyle=style, color=colour)
    for row, (_, name) in enumerate(_HEAD_ROWS):
        for column in range(columns):
            ax = axes[row, column]
            part = "backbone" if column == 2 else f"head {column + 1}"
            ax.set_title(f"{name}, {part}", fontsize=7)
            ax.set_xlabel("step")
            ax.set_ylabel(name)
            ax.set_yscale("log")
    if trained:
        fig.delaxes(axes[0, 2])
        fig.delaxes(axes[1, 2])
    axes[0, 0].legend(fontsize=4, loc="upper right")
    return fig


def save(fig: Figure, out: Path) -> Path:
    """Writes ``fig`` to ``out`` with the suffix .png and returns that path."""
    path = Path(out).with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path
