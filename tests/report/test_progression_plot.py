"""The progression figure: one line per quantity along the steps, Delta_m thick, a task absent
from a step missing there, error bars of +-gain_se, input checks."""

from __future__ import annotations

import struct

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from smto.report import figures  # noqa: E402
from smto.report.figures import progression_plot  # noqa: E402


@pytest.fixture
def frame() -> pd.DataFrame:
    """Two tasks at the first step, a third (I) added at the second; one undefined SE."""
    rows = [
        ("2-task", "delta_m", 0.5, 0.25),
        ("2-task", "S", 1.0, 0.5),
        ("2-task", "D", 0.0, np.nan),
        ("+ instance", "delta_m", 2.0, 1.0),
        ("+ instance", "S", 3.0, 0.5),
        ("+ instance", "D", -1.0, 0.5),
        ("+ instance", "I", 4.0, 2.0),
    ]
    frame = pd.DataFrame(rows, columns=["step", "quantity", "gain", "gain_se"])
    return frame.assign(method="IMTL", baseline="Unit. Scal.")


def test_lines_bars_and_labels_by_hand(frame, tmp_path):
    fig = figures._draw_progression(frame)
    ax = fig.axes[0]
    zero = [ln for ln in ax.get_lines() if ln.get_gid() == "zero"]
    np.testing.assert_allclose(zero[0].get_ydata(), [0.0, 0.0])
    lines = {c.lines[0].get_gid(): c.lines[0] for c in ax.containers}  # the data lines
    assert list(lines) == ["gain:delta_m", "gain:S", "gain:D", "gain:I"]
    np.testing.assert_allclose(lines["gain:delta_m"].get_ydata(), [0.5, 2.0])
    np.testing.assert_allclose(lines["gain:S"].get_ydata(), [1.0, 3.0])
    np.testing.assert_allclose(lines["gain:I"].get_ydata(), [np.nan, 4.0])  # absent at step 1
    assert lines["gain:delta_m"].get_linewidth() > lines["gain:S"].get_linewidth()
    # the series are dodged around each step's position (1, 2), Delta_m first
    x = {q: lines[f"gain:{q}"].get_xdata() for q in ("delta_m", "S", "D", "I")}
    np.testing.assert_allclose(x["delta_m"] + x["I"], [2.0, 4.0])
    assert x["delta_m"][0] < x["S"][0] < x["D"][0] < x["I"][0]
    bars = [c.lines[2][0].get_segments() for c in ax.containers]
    np.testing.assert_allclose(bars[0][1][:, 1], [1.0, 3.0])  # Delta_m at step 2: 2 +- 1
    np.testing.assert_allclose(bars[2][0][:, 1], [0.0, 0.0])  # D at step 1: no SE, no bar
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2-task", "+ instance"]
    assert ax.get_title() == "gain of IMTL over Unit. Scal."
    assert ax.get_ylabel() == "gain (percentage points)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [r"$\Delta_m$", "S", "D", "I"]
    out = tmp_path / "progression"
    png, pdf = progression_plot(frame, out)
    assert (png, pdf) == (out.with_suffix(".png"), out.with_suffix(".pdf"))
    size = struct.unpack(">II", png.read_bytes()[16:24])
    assert size == (round(figures.COLUMN_WIDTH * 300), round(figures.HEIGHT * 300))
    assert pdf.read_bytes().startswith(b"%PDF")


def test_progression_plot_rejects_bad_input(frame, tmp_path):
    with pytest.raises(ValueError, match=r"\['gain_se'\]"):
        progression_plot(frame.drop(columns=["gain_se"]), tmp_path / "p")
    with pytest.raises(ValueError, match="empty"):
        progression_plot(frame.iloc[:0], tmp_path / "p")
    two = frame.assign(method=["IMTL"] * 6 + ["FAMO"])
    with pytest.raises(ValueError, match="one method against one baseline"):
        progression_plot(two, tmp_path / "p")
    with pytest.raises(ValueError, match="several rows of one step and quantity"):
        progression_plot(pd.concat([frame, frame.iloc[:1]]), tmp_path / "p")
    assert not list(tmp_path.iterdir())
