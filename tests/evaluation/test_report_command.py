"""``smto report`` on real short runs: the toy problem and Multi-MNIST (needs SMTO_DATA;
about 5 s). Checks every table and figure is written and the figures are PNGs of the size
the figures module promises."""

from __future__ import annotations

import os
import shutil
import struct
import warnings
from pathlib import Path

import pytest

from smto.cli import main
from smto.evaluation.reference import Reference, single_task_reference
from smto.report import figures
from smto.train import RunConfig, load_run, train
from smto.train.records import find_runs

TABLES = ("relative_gains", "gain_statistics", "test_metrics", "statistics")
METHODS = ("unit_scal", "cagrad", "famo")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def expected_figures(methods) -> dict[str, float]:
    """Figure stem -> width in inches."""
    single = {"delta_m_boxplot": figures.COLUMN_WIDTH, "delta_m_errorbars": figures.COLUMN_WIDTH}
    single.update({f"weights_{m}": figures.COLUMN_WIDTH for m in methods})
    single["results_with_weights"] = figures.DOUBLE_WIDTH
    return single


def check_outputs(out: Path, suffix: str, methods) -> None:
    for name in TABLES:
        assert (out / f"{name}{suffix}").stat().st_size > 0
        assert (out / f"{name}.csv").stat().st_size > 0
    for stem, width in expected_figures(methods).items():
        png = out / f"{stem}.png"
        assert png.stat().st_size > 1000
        assert png_size(png) == (round(width * figures.DPI), round(figures.HEIGHT * figures.DPI))
        assert (out / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"


def make_runs(root: Path, base: dict, single_tasks, tasks: str, data_dir=None, lrs=(1e-3,)):
    """Single-task runs for the reference, then 3 methods x 2 seeds chosen against it."""
    for task in single_tasks:
        for lr in lrs:
            train(RunConfig(tasks=task, lr=lr, **base), root, data_dir=data_dir, progress=False)
    singles = [load_run(d) for d in find_runs(root)]
    reference = single_task_reference(singles)
    for method in METHODS:
        for seed in (0, 1):
            config = RunConfig(
                tasks=tasks, method=method, seed=seed, reference=reference.val, **base
            )
            train(config, root, data_dir=data_dir, progress=False)
    return reference


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory) -> tuple[Path, Reference]:
    root = tmp_path_factory.mktemp("toy") / "runs"
    base = {"problem": "toy_regression", "epochs": 2, "batch_size": 64}
    reference = make_runs(root, base, ("T1", "T2"), "T1_T2", lrs=(1e-3, 1e-2))
    return root, reference


TOY = ["--problem", "toy_regression", "--tasks", "T1_T2"]


def test_report_writes_tables_and_figures(toy_runs, tmp_path, capsys):
    root, reference = toy_runs
    out = tmp_path / "report"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the runs chose their best epochs against the reference
        assert main(["report", str(root), *TOY, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| Method | T1 ↑ | T2 ↑ | avg ↑ |" in printed
    assert "| Unit. Scal. |" in printed and "| FAMO |" in printed
    check_outputs(out, ".md", METHODS)
    assert Reference.load(out / "reference.json") == reference
    runs = (out / "runs.csv").read_text().splitlines()
    assert len(runs) == 1 + 3 * 2


def test_report_latex_method_subset_and_saved_reference(toy_runs, tmp_path):
    root, reference = toy_runs
    multi_only = tmp_path / "multi"
    for d in find_runs(root):
        if "T1_T2" in d.name:
            shutil.copytree(d, multi_only / d.name)
    out = tmp_path / "report"
    reference.save(tmp_path / "ref.json")
    args = ["report", str(multi_only), *TOY, "--out", str(out), "--format", "latex"]
    args += ["--methods", "famo", "Unit. Scal.", "--reference", str(tmp_path / "ref.json")]
    assert main([*args, "--pairwise", "--no-figures", "--baseline", "Unit. Scal."]) == 0
    assert "t-test against Unit. Scal." in (out / "statistics.tex").read_text()
    latex = (out / "test_metrics.tex").read_text()
    assert latex.index("FAMO &") < latex.index("Unit. Scal. &")
    assert "CAGrad" not in latex
    assert r"\toprule" in latex and (out / "pairwise_tests.tex").exists()
    assert not list(out.glob("*.png"))


def test_report_errors(toy_runs, tmp_path, capsys):
    root, _ = toy_runs
    assert main(["report", str(root), *TOY, "--methods", "nash_mtl", "--no-figures"]) == 2
    assert "no finished runs of nash_mtl" in capsys.readouterr().err
    multi_only = tmp_path / "multi"
    for d in find_runs(root):
        if "T1_T2" in d.name:
            shutil.copytree(d, multi_only / d.name)
    assert main(["report", str(multi_only), *TOY, "--out", str(tmp_path / "r")]) == 2
    assert "no finished single-task runs of toy_regression task(s) T1, T2" in (
        capsys.readouterr().err
    )
    missing = ["--reference", str(tmp_path / "none.json")]
    assert main(["report", str(root), *TOY, *missing]) == 2
    assert "no single-task reference at" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere"), *TOY]) == 2


def test_report_on_real_multi_mnist_runs(tmp_path):
    data_dir = os.environ.get("SMTO_DATA")
    if not data_dir:
        pytest.skip("real MNIST not available: set SMTO_DATA to a directory holding mnist/")
    root = tmp_path / "runs"
    base = {"epochs": 2, "problem_options": {"limits": [512, 256, 256]}}
    make_runs(root, base, ("CL", "RR"), "CL_RR", data_dir=data_dir)
    out = tmp_path / "report"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the runs chose their best epochs against the reference
        assert main(["report", str(root), "--tasks", "CL_RR", "--out", str(out)]) == 0
    check_outputs(out, ".md", METHODS)
    metrics = (out / "test_metrics.md").read_text()
    assert metrics.splitlines()[0] == "| Method | CL ↑ | RR ↓ | Δm (%) ↑ | MR ↓ |"


def test_report_json_gives_the_tables_for_scripts(toy_runs, tmp_path, capsys):
    import json

    root, _ = toy_runs
    assert main(["report", str(root), *TOY, "--out", str(tmp_path / "r"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    names = [t["name"] for t in printed["tables"]]
    assert set(TABLES) <= set(names)
    gains = next(t for t in printed["tables"] if t["name"] == "relative_gains")
    assert set(gains["rows"]) == {"Unit. Scal.", "CAGrad", "FAMO"}
    assert str(tmp_path / "r" / "reference.json") in printed["files"]
