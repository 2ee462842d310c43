"""The optimizer study's figures: the parallel coordinates (one axis per metric, normalized
with the better end up, bold lines = the Pareto-optimal rows) and the paired Delta_m bars,
checked in the artist tree and in the written image."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from matplotlib.colors import to_rgba  # noqa: E402

from smto.errors import ConfigError  # noqa: E402
from smto.report import figures  # noqa: E402
from smto.report.pareto_figures import (  # noqa: E402
    BOLD,
    LINE_PREFIX,
    draw_paired_delta_m,
    draw_parallel_coordinates,
    paired_delta_m_plot,
    parallel_coordinates,
)

AXES = [("m1", "acc", True), ("m2", "err", False), ("m3", "flat", True)]


@pytest.fixture
def frame() -> pd.DataFrame:
    # acc spans 0.6..0.9 and err 0.1..0.4 over the drawn rows; flat is constant (drawn at
    # 0.5); the last row has no result and is not drawn.
    return pd.DataFrame(
        {
            "optimizer": ["Adam", "Adam", "SGD", "SGD", "Adam"],
            "pareto": [True, False, True, False, False],
            "m1": [0.9, 0.8, 0.7, 0.6, math.nan],
            "m2": [0.3, 0.2, 0.1, 0.4, math.nan],
            "m3": [1.0, 1.0, 1.0, 1.0, math.nan],
        }
    )


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def config_lines(fig):
    return {
        int(line.get_gid().removeprefix(LINE_PREFIX)): line
        for ax in fig.axes
        for line in ax.get_lines()
        if (line.get_gid() or "").startswith(LINE_PREFIX)
    }


def test_parallel_coordinates_artists(frame):
    fig = draw_parallel_coordinates(frame, AXES, title="fake A_C")
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    lines = config_lines(fig)
    assert sorted(lines) == [0, 1, 2, 3]  # the row without a result is not drawn
    bold = [i for i, line in lines.items() if line.get_linewidth() == BOLD]
    assert bold == [0, 2] and len(bold) == int(frame["pareto"].sum())
    expected = {
        0: [1.0, 1 / 3, 0.5],
        1: [2 / 3, 2 / 3, 0.5],
        2: [1 / 3, 1.0, 0.5],
        3: [0.0, 0.0, 0.5],
    }
    for i, values in expected.items():
        np.testing.assert_allclose(lines[i].get_ydata(), values)
        np.testing.assert_allclose(lines[i].get_xdata(), [0, 1, 2])
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()
    axis_lines = [ln for ln in ax.get_lines() if (ln.get_gid() or "").startswith("axis:")]
    assert [ln.get_gid() for ln in axis_lines] == ["axis:acc", "axis:err", "axis:flat"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["acc ↑", "err ↓", "flat ↑"]
    assert ax.get_ylabel() and ax.get_title() == "fake A_C"
    texts = [t.get_text() for t in ax.texts]
    assert texts[:4] == ["0.9", "0.6", "0.1", "0.4"]  # acc best/worst, err best (low)/worst
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["Adam", "SGD", "Pareto optimal", "dominated"]


def test_parallel_coordinates_files_and_image(frame, tmp_path):
    out = tmp_path / "parallel"
    png, pdf = parallel_coordinates(frame, AXES, out)
    assert png_size(png) == (
        round(figures.DOUBLE_WIDTH * figures.DPI),
        round(figures.HEIGHT * figures.DPI),
    )
    assert pdf.read_bytes()[:4] == b"%PDF" and pdf.stat().st_size > 1000
    from matplotlib.image import imread

    image = imread(png)[..., :3]
    adam = np.array(to_rgba(figures.color_map(["Adam", "SGD"])["Adam"])[:3])
    close = np.abs(image - adam).max(axis=2) < 0.05
    assert close.sum() > 200  # Adam's lines are drawn in Adam's colour


def test_parallel_coordinates_rejects_bad_input(frame):
    with pytest.raises(ConfigError, match="two metrics"):
        draw_parallel_coordinates(frame, AXES[:1])
    with pytest.raises(ConfigError, match="lacks the columns"):
        draw_parallel_coordinates(frame.drop(columns="pareto"), AXES)
    with pytest.raises(ConfigError, match="no configuration"):
        draw_parallel_coordinates(frame.iloc[[4]], AXES)


@pytest.fixture
def paired() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "method": ["Unit. Scal.", "CAGrad", "FAMO"],
            "first": "adam",
            "second": "sgd",
            "delta_m_first": [-10.0, 0.0, 3.0],
            "std_first": [5.3, math.nan, 1.0],
            "delta_m_second": [15.0, 10.0, 2.0],
            "std_second": [0.0, 1.0, 0.5],
        }
    )


def test_paired_delta_m_artists_and_files(paired, tmp_path):
    fig = draw_paired_delta_m(paired, "ΔM (Elich)", False, ("Adam", "SGD"))
    (ax,) = fig.axes
    bars = {
        name: [p for p in ax.patches if p.get_gid() == f"bar:{name}"] for name in ("Adam", "SGD")
    }
    assert [b.get_height() for b in bars["Adam"]] == [-10.0, 0.0, 3.0]
    assert [b.get_height() for b in bars["SGD"]] == [15.0, 10.0, 2.0]
    for first, second in zip(bars["Adam"], bars["SGD"]):  # side by side, Adam left
        assert first.get_x() + first.get_width() == pytest.approx(second.get_x())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Unit. Scal.", "CAGrad", "FAMO"]
    assert "ΔM (Elich)" in ax.get_ylabel() and "lower is better" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Adam", "SGD"]
    study = draw_paired_delta_m(paired, "Δm", True)  # names default to the frame's
    assert "higher is better" in study.axes[0].get_ylabel()
    assert [t.get_text() for t in study.axes[0].get_legend().get_texts()] == ["adam", "sgd"]
    png, pdf = paired_delta_m_plot(paired, tmp_path / "paired", "ΔM (Elich)", False)
    assert png_size(png) == (
        round(figures.COLUMN_WIDTH * figures.DPI),
        round(figures.HEIGHT * figures.DPI),
    )
    assert pdf.read_bytes()[:4] == b"%PDF"
