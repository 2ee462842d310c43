"""The probe figures: Elich et al.'s Fig. 4 layout and the main study's cosine-gap scatter,
checked on their artists (axes, labels, lines, bands, points) and their pixels."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.image import imread  # noqa: E402

from smto.errors import ConfigError  # noqa: E402
from smto.report.conflict_figures import (  # noqa: E402
    FIG_A6_MEASURES,
    ROW_HEIGHT,
    conflicts_figure,
    cosine_gap_scatter,
    draw_conflicts,
    draw_cosine_gap,
    has_pairs,
)
from smto.report.figures import COLUMN_WIDTH, DPI  # noqa: E402

MEASURES = ("cosine", "magnitude", "conflict_ratio", "cosine_conflicting", "cosine_supporting")


def epochs_frame(families=("inter_task", "inter_sample")) -> pd.DataFrame:
    """Two runs, three epochs; run r, epoch e, family f (0 inter-task, 1 inter-sample):
    mean = 0.1 (e + 1) + 0.2 f + 0.1 r, band = mean -+ 0.05 (f + 1)."""
    rows = []
    for run in (0, 1):
        for epoch in range(3):
            row = {"run_id": f"r{run}", "epoch": epoch}
            for f, family in enumerate(families):
                for measure in MEASURES:
                    mean = 0.1 * (epoch + 1) + 0.2 * f + 0.1 * run
                    stem = f"probes.{family}.{measure}"
                    row[f"{stem}.mean"] = mean
                    row[f"{stem}.p2_5"] = mean - 0.05 * (f + 1)
                    row[f"{stem}.p97_5"] = mean + 0.05 * (f + 1)
            rows.append(row)
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # epochs out of order


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def lines_by_gid(ax) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {
        line.get_gid(): (np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float))
        for line in ax.get_lines()
        if line.get_gid()
    }


def test_fig4_layout_one_row_per_measure_with_both_families():
    fig = draw_conflicts(epochs_frame(), title="Unit. Scal.")
    axes = fig.axes
    assert len(axes) == 3
    assert [ax.get_ylabel() for ax in axes] == [
        "cosine similarity",
        "magnitude similarity",
        "conflicting params",
    ]
    assert axes[-1].get_xlabel() == "epoch" and axes[0].get_title() == "Unit. Scal."
    legend = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert legend == ["inter-task", "inter-sample"]
    for ax, measure in zip(axes, ("cosine", "magnitude", "conflict_ratio")):
        lines = lines_by_gid(ax)
        assert set(lines) == {f"mean:inter_task:{measure}", f"mean:inter_sample:{measure}"}
        for f, family in enumerate(("inter_task", "inter_sample")):
            x, y = lines[f"mean:{family}:{measure}"]
            assert x.tolist() == [0.0, 1.0, 2.0]
            # the runs of an epoch averaged: 0.1 (e + 1) + 0.2 f + 0.05
            np.testing.assert_allclose(y, 0.1 * (x + 1) + 0.2 * f + 0.05)
            bands = [c for c in ax.collections if c.get_gid() == f"band:{family}:{measure}"]
            assert len(bands) == 1 and isinstance(bands[0], PolyCollection)
            vertices = bands[0].get_paths()[0].vertices
            low, high = y - 0.05 * (f + 1), y + 0.05 * (f + 1)
            assert vertices[:, 1].min() == pytest.approx(low.min())
            assert vertices[:, 1].max() == pytest.approx(high.max())


def test_fig4_files_have_pixels_of_both_families(tmp_path):
    out = tmp_path / "conflicts"
    png, pdf = conflicts_figure(epochs_frame(), out)
    assert (png, pdf) == (out.with_suffix(".png"), out.with_suffix(".pdf"))
    assert png_size(png) == (round(COLUMN_WIDTH * DPI), round((3 * ROW_HEIGHT + 0.4) * DPI))
    assert pdf.read_bytes()[:4] == b"%PDF"
    pixels = np.round(imread(png)[..., :3] * 255).astype(int)
    for rgb in ((31, 119, 180), (214, 39, 40)):  # tab:blue (inter-task), tab:red
        assert (np.abs(pixels - rgb).sum(axis=2) < 30).sum() > 100


def test_appendix_variants():
    fig = draw_conflicts(epochs_frame(), measures=FIG_A6_MEASURES)
    assert [ax.get_ylabel() for ax in fig.axes] == ["cosine (cos < 0)", "cosine (cos ≥ 0)"]
    averaged = epochs_frame(("inter_task_averaged", "inter_sample_averaged"))
    fig = draw_conflicts(averaged, measures=("cosine",), averaged=True)
    assert set(lines_by_gid(fig.axes[0])) == {
        "mean:inter_task_averaged:cosine",
        "mean:inter_sample_averaged:cosine",
    }
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "inter-task (averaged)"
    assert has_pairs(averaged, averaged=True) and not has_pairs(averaged)


def test_a_family_without_values_is_left_out_and_no_values_is_an_error():
    frame = epochs_frame()
    frame[[c for c in frame.columns if ".inter_task." in c]] = np.nan  # a single-task run
    fig = draw_conflicts(frame)
    assert all(
        set(lines_by_gid(ax)) == {g for g in lines_by_gid(ax) if "inter_sample" in g}
        for ax in fig.axes
    )
    assert len(lines_by_gid(fig.axes[0])) == 1
    with pytest.raises(ConfigError, match="no probe values"):
        draw_conflicts(pd.DataFrame({"epoch": [0, 1], "probes.cosine_to_mean": [0.5, 0.6]}))
    with pytest.raises(ConfigError, match="lacks the columns"):
        draw_conflicts(pd.DataFrame({"run_id": ["a"]}))


TABLE = pd.DataFrame(
    {
        "problem": ["MNIST CL_RR", "City 19C", "QM9", "City R50"],
        "cosine": [0.55, 0.45, 0.3, 0.72],
        "gap": [-6.8, -5.6, -82.1, -0.2],
    }
)


def test_cosine_gap_scatter(tmp_path):
    fig = draw_cosine_gap(TABLE)
    (ax,) = fig.axes
    (points,) = [c for c in ax.collections if c.get_gid() == "problems"]
    np.testing.assert_allclose(points.get_offsets(), TABLE[["cosine", "gap"]].to_numpy())
    assert [t.get_text() for t in ax.texts] == list(TABLE["problem"])
    assert "cos" in ax.get_xlabel() and "best SMTO" in ax.get_ylabel()
    r = np.corrcoef(TABLE["cosine"], TABLE["gap"])[0, 1]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"r = {r:.2f}"]
    (fit,) = [line for line in ax.get_lines() if line.get_label().startswith("r =")]
    slope, intercept = np.polyfit(TABLE["cosine"], TABLE["gap"], 1)
    x, y = np.asarray(fit.get_xdata()), np.asarray(fit.get_ydata())
    np.testing.assert_allclose(x, [0.3, 0.72])
    np.testing.assert_allclose(y, slope * x + intercept)
    png, pdf = cosine_gap_scatter(TABLE, tmp_path / "cosine_gap")
    assert png_size(png) == (round(COLUMN_WIDTH * DPI), round(2.4 * DPI))
    assert pdf.stat().st_size > 1000


def test_cosine_gap_scatter_input_checks():
    with pytest.raises(ConfigError, match="several rows of one problem"):
        draw_cosine_gap(pd.concat([TABLE, TABLE.iloc[:1]]))
    with pytest.raises(ConfigError, match="lacks the columns"):
        draw_cosine_gap(TABLE.drop(columns="gap"))
    two = draw_cosine_gap(TABLE.iloc[:2])
    assert two.axes[0].get_legend() is None  # no line through two points
