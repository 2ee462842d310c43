"""``smto toy cagrad`` and ``smto toy loss-scale`` print their tables and write figures."""

from __future__ import annotations

import pytest

from smto.cli import main


def test_toy_cagrad_prints_the_table_and_writes_the_figure(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code = main(
        ["toy", "cagrad", "--methods", "unit_scal", "--lrs", "1", "--iterations", "3",
         "--out", str(tmp_path)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "Table A3" in out and "Unit. Scal." in out and "- (0/3)" in out
    assert (tmp_path / "cagrad_toy.png").stat().st_size > 0


@pytest.mark.slow
def test_toy_loss_scale_prints_both_settings(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code = main(["toy", "loss-scale", "--steps", "2", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "Backbone frozen" in out and "Backbone trained" in out
    assert out.count("EW + per-task Adam") == 4
    assert (tmp_path / "loss_scale_frozen.png").exists()
    assert (tmp_path / "loss_scale_trained.png").exists()


def test_toy_cagrad_rejects_a_method_it_cannot_run(capsys):
    assert main(["toy", "cagrad", "--methods", "si", "--iterations", "1"]) == 2
    assert "cannot run on the CAGrad toy" in capsys.readouterr().err
