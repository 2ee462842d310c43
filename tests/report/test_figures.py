"""Report figures: files of the right size, the baseline median, the EMA, input checks."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from smto.report import figures  # noqa: E402
from smto.report.figures import (  # noqa: E402
    delta_m_boxplot,
    delta_m_errorbars,
    results_with_weights,
    weights_plot,
)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height in pixels from the PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def check_files(paths: list[Path], out: Path, width_in: float) -> None:
    png, pdf = paths
    assert (png, pdf) == (out.with_suffix(".png"), out.with_suffix(".pdf"))
    assert png_size(png) == (round(width_in * 300), round(2.4 * 300))
    assert pdf.read_bytes().startswith(b"%PDF")
    assert pdf.stat().st_size > 1000


def gid_lines(fig, prefix: str) -> dict[str, np.ndarray]:
    return {
        line.get_gid().removeprefix(prefix): np.asarray(line.get_ydata(), dtype=float)
        for ax in fig.axes
        for line in ax.get_lines()
        if (line.get_gid() or "").startswith(prefix)
    }


@pytest.fixture
def per_run() -> pd.DataFrame:
    # Unit. Scal.: median 2, mean 13/3, so the dashed line tells the median from the mean.
    rows = {"Nash-MTL": [3.0, 4.0], "Unit. Scal.": [1.0, 10.0, 2.0], "FAMO": [-1.0, np.nan, 0.5]}
    return pd.DataFrame([{"method": m, "delta_m": v} for m, vs in rows.items() for v in vs])


@pytest.fixture
def history() -> pd.DataFrame:
    """Two runs, three epochs, rows shuffled; the weights are unnormalized on purpose.

    Normalized per row, task A averages to [0.5, 0.25, 0.75] over epochs 0, 1, 2 (averaging the
    raw weights first would give 3.5 / 6 at epoch 0 instead).
    """
    rows = [
        ("r1", 2, 3.0, 1.0),
        ("r2", 0, 6.0, 2.0),
        ("r1", 0, 1.0, 3.0),
        ("r2", 1, 2.0, 6.0),
        ("r1", 1, 1.0, 3.0),
        ("r2", 2, 0.6, 0.2),
    ]
    return pd.DataFrame(rows, columns=["run_id", "epoch", "weights.A", "weights.B"])


def test_boxplot_files(per_run, tmp_path):
    out = tmp_path / "new" / "dir" / "box"
    check_files(delta_m_boxplot(per_run, out), out, 3.25)


def test_boxplot_order_and_baseline_median(per_run):
    fig = figures._draw_delta_m_boxplot(per_run, "Unit. Scal.")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["Nash-MTL", "Unit. Scal.", "FAMO"]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1
    np.testing.assert_allclose(dashed[0].get_ydata(), [2.0, 2.0])
    # each run is a point at its method's position; FAMO's NaN run is left out
    points = [line for line in ax.get_lines() if line.get_marker() == "."]
    assert [len(p.get_ydata()) for p in points] == [2, 3, 2]
    np.testing.assert_allclose(points[1].get_xdata(), [2, 2, 2])


def test_boxplot_without_the_baseline_has_no_dashed_line(per_run):
    fig = figures._draw_delta_m_boxplot(per_run, "IMTL")
    assert not [line for line in fig.axes[0].get_lines() if line.get_linestyle() == "--"]


def test_the_delta_m_axes_name_the_convention(per_run):
    study = figures._draw_delta_m_boxplot(per_run, "IMTL").axes[0].get_ylabel()
    elich = figures._draw_delta_m_boxplot(per_run, "IMTL", "elich").axes[0].get_ylabel()
    assert "Elich" not in study and "Delta_m" in study
    assert "Elich" in elich and elich == figures.delta_m_axis_label("elich")
    summary = pd.DataFrame({"method": ["A"], "mean": [1.0], "ci_low": [0.5], "ci_high": [2.0]})
    label = figures._draw_errorbars(summary, "elich").axes[0].get_ylabel()
    assert label.startswith(figures.delta_m_axis_label("elich"))


def test_weights_raw_and_ema_by_hand(history, tmp_path):
    history.index = [0] * len(history)  # as after concatenating histories
    fig = figures._draw_weights(history, beta=0.75)
    raw, ema = gid_lines(fig, "raw:"), gid_lines(fig, "ema:")
    np.testing.assert_allclose(raw["A"], [0.5, 0.25, 0.75])
    np.testing.assert_allclose(raw["B"], [0.5, 0.75, 0.25])
    # m0 = 0.5; m1 = 0.75 * 0.5 + 0.25 * 0.25 = 0.4375; m2 = 0.75 * 0.4375 + 0.25 * 0.75
    np.testing.assert_allclose(ema["A"], [0.5, 0.4375, 0.515625])
    np.testing.assert_allclose(ema["B"], [0.5, 0.5625, 0.484375])
    line = next(ln for ln in fig.axes[0].get_lines() if ln.get_gid() == "ema:A")
    np.testing.assert_allclose(line.get_xdata(), [0, 1, 2])
    out = tmp_path / "weights"
    check_files(weights_plot(history, out, beta=0.75), out, 3.25)


def test_weights_plot_rejects_bad_input(history, tmp_path):
    with pytest.raises(ValueError, match="weights"):
        weights_plot(history.drop(columns=["weights.A", "weights.B"]), tmp_path / "w")
    with pytest.raises(ValueError, match="run_id"):
        weights_plot(history.drop(columns=["run_id"]), tmp_path / "w")
    with pytest.raises(ValueError, match="empty"):
        weights_plot(history.iloc[:0], tmp_path / "w")
    with pytest.raises(ValueError, match="beta"):
        weights_plot(history, tmp_path / "w", beta=1.0)
    two_methods = history.assign(method=["UW", "FAMO"] * 3)
    with pytest.raises(ValueError, match="one method"):
        weights_plot(two_methods, tmp_path / "w")
    assert not list(tmp_path.iterdir())


def test_results_with_weights_distance_by_hand(per_run, history, tmp_path):
    both = pd.concat([history.assign(method="FAMO"), history.assign(method="Unit. Scal.")])
    both.loc[both["method"] == "Unit. Scal.", ["weights.A", "weights.B"]] = 1.0
    fig = figures._draw_results_with_weights(per_run, both, "Unit. Scal.")
    box_ax, weight_ax = fig.axes[:2]
    np.testing.assert_allclose(
        [ln.get_ydata()[0] for ln in box_ax.get_lines() if ln.get_linestyle() == "--"], [2.0]
    )
    curves = gid_lines(fig, "imbalance:")
    assert all((ln.get_gid() or "").startswith("imbalance:") for ln in weight_ax.get_lines())
    assert r"\mathrm{A}" in weight_ax.get_ylabel()
    assert list(curves) == ["Unit. Scal.", "FAMO"]  # order of first appearance in per_run
    # epoch 0: A = 1/4 (r1) and 3/4 (r2): mean |A - 0.5| = 0.25, whereas |mean A - 0.5| = 0
    np.testing.assert_allclose(curves["FAMO"], [0.25, 0.25, 0.25])
    np.testing.assert_allclose(curves["Unit. Scal."], [0.0, 0.0, 0.0])
    out = tmp_path / "rw"
    check_files(results_with_weights(per_run, both, out), out, 6.75)


def test_results_with_weights_needs_two_tasks(per_run, history, tmp_path):
    three = history.assign(method="FAMO", **{"weights.C": 1.0})
    with pytest.raises(ValueError, match="exactly two tasks"):
        results_with_weights(per_run, three, tmp_path / "rw")
    with pytest.raises(ValueError, match=r"\['method'\]"):
        results_with_weights(per_run, history, tmp_path / "rw")


def test_errorbars_by_hand(tmp_path):
    summary = pd.DataFrame(
        {
            "method": ["Unit. Scal.", "IMTL", "FAMO"],
            "mean": [1.0, 2.0, -0.5],
            "ci_low": [0.25, 1.5, np.nan],
            "ci_high": [3.0, 2.5, np.nan],
        }
    )
    fig = figures._draw_errorbars(summary)
    ax = fig.axes[0]
    zero = [ln for ln in ax.get_lines() if ln.get_gid() == "zero"]
    np.testing.assert_allclose(zero[0].get_ydata(), [0.0, 0.0])
    bars = [c.lines[2][0].get_segments()[0][:, 1] for c in ax.containers]
    np.testing.assert_allclose(bars[0], [0.25, 3.0])
    np.testing.assert_allclose(bars[1], [1.5, 2.5])
    np.testing.assert_allclose(bars[2], [-0.5, -0.5])  # undefined interval: no bar
    out = tmp_path / "eb.png"
    check_files(delta_m_errorbars(summary, out), out, 3.25)


def test_errorbars_rejects_bad_input(tmp_path):
    summary = pd.DataFrame({"method": ["UW"], "mean": [1.0], "ci_low": [1.5], "ci_high": [2.0]})
    with pytest.raises(ValueError, match="contain the mean"):
        delta_m_errorbars(summary, tmp_path / "eb")
    with pytest.raises(ValueError, match=r"\['ci_high'\]"):
        delta_m_errorbars(summary.drop(columns=["ci_high"]), tmp_path / "eb")


def test_boxplot_rejects_missing_columns_and_empty_input(per_run, tmp_path):
    with pytest.raises(ValueError, match=r"\['delta_m'\]"):
        delta_m_boxplot(per_run.drop(columns=["delta_m"]), tmp_path / "box")
    with pytest.raises(ValueError, match="empty"):
        delta_m_boxplot(per_run.iloc[:0], tmp_path / "box")


def test_missing_matplotlib_names_the_extra(per_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"smto\[plots\]"):
        delta_m_boxplot(per_run, tmp_path / "box")
