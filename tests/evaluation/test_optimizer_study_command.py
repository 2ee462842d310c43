"""``smto optimizer-study`` on a small fake run directory (hand-made records on disk, no
training): the printed tables, the files, the reference given or built from the single-task
runs beside, and the errors."""

from __future__ import annotations

import json
import struct

import pytest

pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from eval_records import fake_problem, multi_record, single_record  # noqa: F401 (autouse)

from smto.cli import main
from smto.evaluation.reference_values import Reference

REFERENCE = Reference(
    "fake",
    val={"A": {"acc": 0.8}, "C": {"err": 0.2}},
    test={"A": {"acc": 0.8}, "C": {"err": 0.2}},
)
# (method, optimizer, lr): mean (acc, err) of two seeds. Pareto optimal: Unit. Scal. + Adam
# at both lrs and CAGrad + SGD at 0.1; CAGrad + Adam (0.84, 0.11) is dominated by Unit.
# Scal. + Adam 1e-2 only, so no SGD configuration dominates it; Unit. Scal. + SGD (0.88,
# 0.20) is dominated by Unit. Scal. + Adam 1e-3.
MEANS = {
    ("unit_scal", "adam", 1e-3): (0.91, 0.20),
    ("unit_scal", "adam", 1e-2): (0.85, 0.10),
    ("cagrad", "adam", 1e-3): (0.84, 0.11),
    ("unit_scal", "sgd", 0.1): (0.88, 0.20),
    ("cagrad", "sgd", 0.1): (0.80, 0.05),
}
FILES = (
    "reference.json",
    "configurations.csv",
    "paired.csv",
    "pareto_totals.csv",
    "pareto_counts.csv",
    "best_per_optimizer.csv",
)
FIGURES = ("parallel_coordinates", "delta_m_adam_vs_sgd")


def write_sweep(root, tasks="A_C", singles=True):
    for (method, optimizer, lr), (acc, err) in MEANS.items():
        for seed, shift in ((0, -0.01), (1, 0.01)):
            values = {"A": {"acc": acc + shift}, "C": {"err": err - shift}}
            if tasks != "A_C":
                values = {"A": values["A"], "B": {"acc": acc, "err": err}}
            record = multi_record(
                f"{tasks}-{method}-{optimizer}-{lr}-{seed}",
                values,
                values,
                tasks=tasks,
                method=method,
                optimizer=optimizer,
                lr=lr,
                seed=seed,
                reference=REFERENCE.val,
                delta_m_convention="elich",
            )
            record.save(root / record.run_id)
    if singles:
        for task, metric, value in (("A", "acc", 0.8), ("C", "err", 0.2)):
            single_record(f"st-{task}", task, {metric: (value, value)}).save(root / f"st-{task}")


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_command_prints_tables_and_writes_files(tmp_path, capsys):
    root = tmp_path / "runs"
    write_sweep(root, singles=False)
    REFERENCE.save(tmp_path / "reference.json")
    out = tmp_path / "study"
    args = ["optimizer-study", str(root), "--reference", str(tmp_path / "reference.json")]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fake A_C: 5 configurations, Pareto front on test, Delta_m convention elich" in printed
    assert "| Adam | 3 | 2 | – | 3 |" in printed  # Table 2: 3 configurations, 2 PO, 3 w.r.t. SGD
    assert "| SGD | 2 | 1 | 1 | – |" in printed
    assert "| Adam | 2 | 0 | 2 |" in printed  # Table A2: Unit. Scal., CAGrad, total
    assert "| STL |  | – | 0.800 | 0.200 | – | – |" in printed
    # Unit. Scal. + Adam: lr 1e-2 has the lower validation ΔM, (-6.25 - 50) / 2 = -28.125
    # against (-13.75 + 0) / 2 for lr 1e-3
    assert "| Unit. Scal. | Adam | 0.01 | 0.850 | 0.100 | -28.1" in printed
    for name in FILES:
        assert (out / name).stat().st_size > 0
    for name in ("pareto_totals", "pareto_counts", "best_per_optimizer"):
        assert (out / f"{name}.md").read_text().startswith("| ")
    for stem in FIGURES:
        assert png_size(out / f"{stem}.png")[0] > 500
        assert (out / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"
    assert "figures: parallel_coordinates, delta_m_adam_vs_sgd" in printed


def test_command_builds_the_reference_and_takes_options(tmp_path, capsys):
    root = tmp_path / "runs"
    write_sweep(root)
    out = tmp_path / "study"
    args = ["optimizer-study", str(root), "--out", str(out), "--format", "latex"]
    options = ["--delta-m-convention", "study", "--split", "val", "--no-figures", "--json"]
    with pytest.warns(UserWarning, match="'study' convention"):  # the runs chose by Elich's
        assert main([*args, *options]) == 0
    report = json.loads(capsys.readouterr().out)
    tables = {t["name"]: t["rows"] for t in report["tables"]}
    assert tables["pareto_totals"][0]["row"] == "Adam"
    assert tables["pareto_totals"][0]["PO (full)"] == 2
    best = tables["best_per_optimizer"]  # a method appears once per optimizer
    assert [row["row"] for row in best] == ["STL", "Unit. Scal.", "Unit. Scal.", "CAGrad", "CAGrad"]
    assert best[0]["A"] == pytest.approx(0.8) and "Δm" in best[0]
    # the study's gain, highest is best (one metric per task: minus Elich's drop): Unit.
    # Scal. + Adam at lr 1e-2, (6.25 + 50) / 2 against (13.75 + 0) / 2 at lr 1e-3
    assert (best[1]["Optimizer"], best[1]["lr"]) == ("Adam", 1e-2)
    assert best[1]["Δm"] == pytest.approx(28.125)
    assert (out / "best_per_optimizer.tex").read_text().startswith(r"\begin{table}")
    assert Reference.load(out / "reference.json").test == REFERENCE.test
    assert not (out / "parallel_coordinates.png").exists()


def test_command_errors(tmp_path, capsys):
    root = tmp_path / "runs"
    write_sweep(root, singles=False)
    write_sweep(root, tasks="A_B", singles=False)
    assert main(["optimizer-study", str(root)]) == 2
    assert "several problems or task sets (fake A_B, fake A_C)" in capsys.readouterr().err
    assert main(["optimizer-study", str(root), "--tasks", "A_C"]) == 2
    assert "single-task runs" in capsys.readouterr().err  # no reference to build
    assert main(["optimizer-study", str(tmp_path / "none")]) == 2
    assert "no runs directory" in capsys.readouterr().err
    REFERENCE.save(tmp_path / "reference.json")
    with_ref = ["optimizer-study", str(root), "--reference", str(tmp_path / "reference.json")]
    assert main([*with_ref, "--tasks", "A_C", "--second", "signsgd", "--no-figures"]) == 0
    assert not (tmp_path / "runs" / "optimizer-study" / "paired.csv").exists()
