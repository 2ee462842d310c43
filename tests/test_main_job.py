"""The main job (./run.sh) on a tiny budget: the same sweep files and commands, smaller limits.

Needs the real MNIST files (SMTO_DATA); about 20 s."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from smto.cli import main

ROOT = Path(__file__).resolve().parents[1]
FILES = ("main-job.toml", "main-job-single_task.toml")


def _tiny_copy(directory: Path, runs: Path) -> Path:
    """The main job's sweep files with 1 epoch on 300 images and 2 seeds, runs under ``runs``."""
    for name in FILES:
        text = (ROOT / "sweeps" / name).read_text()
        text = re.sub(r"limits = \[[^\]]*\]", "limits = [300, 200, 200]", text)
        text = re.sub(r"(?m)^epochs = \d+", "epochs = 1", text)
        text = re.sub(r"(?m)^runs = \d+", "runs = 2", text)
        text = re.sub(r'(?m)^root = ".*"', f'root = "{runs}"', text)
        (directory / name).write_text(text)
    return directory / FILES[0]


def test_run_sh_runs_these_files_and_the_report():
    script = (ROOT / "run.sh").read_text()
    assert "smto sweep run sweeps/main-job.toml" in script
    assert 'smto report "$root" --problem multi_mnist --tasks CL_RR' in script


def test_the_main_job_gives_delta_m_per_method_a_reference_and_figures(tmp_path, capsys):
    data = os.environ.get("SMTO_DATA")
    if not data or not (Path(data) / "mnist").is_dir():
        pytest.skip("real MNIST not available: set SMTO_DATA to a directory holding mnist/")
    runs = tmp_path / "runs"
    sweep = _tiny_copy(tmp_path, runs)
    assert main(["sweep", "run", str(sweep), "--no-progress", "--data-dir", data]) == 0
    out = runs / "report"
    capsys.readouterr()
    args = ["report", str(runs), "--problem", "multi_mnist", "--tasks", "CL_RR", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    table = printed[printed.index("Mean test metrics, Δm and mean rank") :]
    for method in ("Unit. Scal.", "MGDA", "CAGrad", "Nash-MTL", "FAMO"):
        assert re.search(rf"\| {re.escape(method)} \|( [^|]+ \|){{4}}", table), method
    assert "figures: delta_m_boxplot" in printed
    reference = out / "reference.json"
    assert reference.stat().st_size > 0 and '"CL"' in reference.read_text()
    for stem in ("delta_m_boxplot", "delta_m_errorbars", "results_with_weights"):
        assert (out / f"{stem}.png").stat().st_size > 1000
        assert (out / f"{stem}.pdf").stat().st_size > 1000
    shutil.rmtree(runs)
