"""The toys' figures: panels, axis labels and drawn lines, inspected on the artist tree."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

import matplotlib.image

from smto.toys.cagrad import STARTS
from smto.toys.descent import descend
from smto.toys.figures import cagrad_figure, loss_scale_figure, save
from smto.toys.loss_scale import experiment


def _assert_written(fig, path):
    out = save(fig, path)
    assert out.suffix == ".png" and out.stat().st_size > 10_000
    image = matplotlib.image.imread(out)
    assert image[..., :3].std() > 0.05  # not a blank canvas


@pytest.mark.slow
def test_the_cagrad_figure_has_a_panel_per_method_and_optimizer(tmp_path):
    trajectories = {
        (m, o): [descend(m, o, 0.5, s, iterations=4) for s in STARTS]
        for m in ("unit_scal", "cagrad")
        for o in ("gd", "adam")
    }
    fig = cagrad_figure(trajectories, lr=0.5)
    assert len(fig.axes) == 4
    titles = sorted(ax.get_title() for ax in fig.axes)
    assert titles[0] == "CAGrad + adam, lr 0.5"
    for ax in fig.axes:
        assert ax.get_xlabel() == "$x_1$" and ax.get_ylabel() == "$x_2$"
        # the Pareto set, 3 trajectories and their starts, the minimum
        assert len(ax.get_lines()) == 1 + 3 * 2 + 1
        assert ax.collections  # the contours
        trajectory = ax.get_lines()[1]
        assert len(trajectory.get_xdata()) == 5  # the start and 4 steps
    _assert_written(fig, tmp_path / "toy")


@pytest.mark.slow
@pytest.mark.parametrize("trained, panels", [(False, 8), (True, 10)])
def test_the_loss_scale_figure_has_the_rows_of_fig_a1_a2(tmp_path, trained, panels):
    pairs = experiment(trained, runs=(("unit_scal", "sgd"), ("uw_o", "sgd")), steps=4)
    fig = loss_scale_figure(pairs)
    assert len(fig.axes) == panels
    for ax in fig.axes:
        assert ax.get_xlabel() == "step" and ax.get_ylabel()
        assert len(ax.get_lines()) == 4  # 2 runs, unscaled and scaled
        assert all(len(line.get_xdata()) == 4 for line in ax.get_lines())
    styles = {line.get_linestyle() for line in fig.axes[0].get_lines()}
    assert styles == {"-", ":"}
    backbone = [ax for ax in fig.axes if "backbone" in ax.get_title()]
    assert len(backbone) == (2 if trained else 0)
    _assert_written(fig, tmp_path / "scale")
