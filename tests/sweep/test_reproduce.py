"""``smto reproduce``: its budget, the sweep files it writes from the published
configurations, and a quick end-to-end run on Multi-MNIST with small limits (the table's
columns, the published values read from the data file, resuming)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from sweep_helpers import FAST

from smto.errors import ConfigError
from smto.evaluation.published import DELTA_M, published_problem
from smto.evaluation.reproduction import QUICK_NOTE
from smto.sweep import load_sweep
from smto.sweep.driver import WorkerSettings
from smto.sweep.reproduce import (
    QUICK_LIMITS,
    budget,
    exported_comparison,
    finished_comparison,
    report,
    reproduce,
    write_sweeps,
)
from smto.train.records import RunRecord

DATA = Path(os.environ.get("SMTO_DATA", "/work/shared/data"))
SETTINGS = WorkerSettings(**FAST, data_dir=DATA)


def test_the_budget_is_the_studys_unless_quick_and_fewer_epochs_or_data_are_quick():
    full = budget("multi_mnist")
    assert (full.seeds, full.epochs, full.limits, full.quick) == (10, 100, None, False)
    quick = budget("multi_mnist", quick=True)
    assert (quick.seeds, quick.epochs, quick.limits, quick.quick) == (2, 2, QUICK_LIMITS, True)
    assert budget("multi_mnist", seeds=3).quick is False  # 3 seeds at 100 epochs: comparable
    assert budget("multi_mnist", epochs=10).quick is True
    assert budget("multi_mnist", limits=[100, 10, 10]).tag == "s10-e100-n100"
    with pytest.raises(ConfigError, match="limits"):
        budget("multi_mnist", limits=[100, 10])
    with pytest.raises(ConfigError, match="seeds"):
        budget("multi_mnist", seeds=0)


def test_the_sweep_files_hold_the_published_configurations(tmp_path):
    published = published_problem("multi_mnist-CL_RR")
    files = write_sweeps(published, budget("multi_mnist"), tmp_path, ["famo", "nash_mtl"])
    famo, nash = (load_sweep(f) for f in files)
    assert famo.fixed["lr"] == 0.0025 and famo.fixed["dropout"] == 0.0  # Table 7
    assert famo.method_grids["famo"] == {"gamma": [0.01, 0.001, 0.0001]}  # searched again
    assert famo.method_params["famo"] == {"logit_lr": 0.025}
    assert (famo.runs, famo.extra) == (5, 5)  # the study's 5 + 5 for a search
    assert (nash.runs, nash.extra) == (10, 0)
    assert nash.method_params["nash_mtl"] == {"heads": "weighted"}  # the study's code
    references = [load_sweep(p) for p in famo.reference_sweeps]
    assert {r.tasks: r.fixed["dropout"] for r in references} == {("CL",): 0.5, ("RR",): 0.0}
    assert all(r.fixed["lr"] == 0.0025 and r.runs == 10 for r in references)


def test_an_unknown_method_of_the_problem_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no published configuration of 'graddrop'"):
        reproduce("multi_mnist-CL_CR", budget("multi_mnist", quick=True), tmp_path,
                  ["graddrop"], settings=SETTINGS, progress=False, echo=lambda _: None)  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "mnist").is_dir(), reason="needs MNIST in SMTO_DATA")
def test_a_quick_reproduction_runs_end_to_end_and_resumes(tmp_path):
    plan = budget("multi_mnist", quick=True, epochs=1, limits=[256, 64, 64])
    messages: list[str] = []
    comparison, written = reproduce(
        "multi_mnist-CL_RR", plan, tmp_path, ["unit_scal", "cagrad"], settings=SETTINGS,
        progress=False, echo=messages.append,
    )  # fmt: skip
    assert messages[0] == QUICK_NOTE
    assert [p.name for p in written] == [
        "comparison.md", "comparison.json", "comparison.png", "comparison.pdf"
    ]  # fmt: skip
    table = (tmp_path / "comparison.md").read_text()
    assert QUICK_NOTE in table
    assert "| method | published | ours: mean | std | 95 % interval | runs | |" in table
    assert "| Unit. Scal. | -8.952 |" in table and "| CAGrad | -2.137 |" in table  # Table 3
    rows = {(r.method, r.quantity): r for r in comparison.rows}
    assert set(rows) == {(m, q) for m in ("unit_scal", "cagrad") for q in ("CL", "RR", DELTA_M)}
    assert all(r.runs == 2 for r in rows.values())  # 2 seeds each (cagrad: 1 + 1 of a search)
    data = json.loads((tmp_path / "comparison.json").read_text())
    assert data["quick"] is True and data["seeds"] == 2
    start = time.monotonic()
    again, _ = reproduce("multi_mnist-CL_RR", plan, tmp_path, ["unit_scal", "cagrad"],
                         settings=SETTINGS, progress=False, echo=lambda _: None)  # fmt: skip
    assert [r.values for r in again.rows] == [r.values for r in comparison.rows]  # resumed
    assert time.monotonic() - start < 30  # nothing trained again


def _saved(root: Path, method: str, tasks: str, seed: int, accuracy: float | None,
           mse: float | None, epochs: int = 100, status: str = "completed") -> None:  # fmt: skip
    """A finished run record of the reproduction's layout under ``root`` (hand-made values:
    the same at the best epoch on validation and test)."""
    values = {}
    if accuracy is not None:
        values["CL"] = {"accuracy": accuracy}
    if mse is not None:
        values["RR"] = {"mse": mse}
    config = {"problem": "multi_mnist", "tasks": tasks, "method": method, "seed": seed,
              "lr": 0.001, "dropout": 0.0, "weight_decay": 0.0, "epochs": epochs,
              "problem_options": {"right_indices": "original"}}  # fmt: skip
    by_metric = {f"{t}/{m}": {"epoch": 0, "val": v, "test": v}
                 for t, metrics in values.items() for m, v in metrics.items()}  # fmt: skip
    run_id = f"{tasks}-{method}-seed{seed}-e{epochs}"
    single = "_" not in tasks
    record = RunRecord(run_id, config, "test", status, best_epoch=0, best_val=values,
                       best_test=values, best_by_metric=by_metric if single else {})  # fmt: skip
    (root / run_id).mkdir(parents=True)
    record.save(root / run_id)


def test_the_partial_report_tables_the_finished_runs_of_the_budget_and_says_so(tmp_path):
    for seed in range(2):
        _saved(tmp_path, "unit_scal", "CL", seed, 0.9, None)
    _saved(tmp_path, "unit_scal", "RR", 0, None, 0.1)
    _saved(tmp_path, "unit_scal", "CL", 9, 0.1, None, epochs=2)  # another budget: left out
    for seed in range(3):  # CL gains -1, -2, -3 %, RR -10, -20, -30 %: Delta_m -5.5, -11, -16.5
        _saved(tmp_path, "unit_scal", "CL_RR", seed, 0.9 * (1 - (seed + 1) / 100),
               0.1 * (1 + (seed + 1) / 10))  # fmt: skip
    _saved(tmp_path, "unit_scal", "CL_RR", 7, 0.0, 9.0, epochs=2)  # another budget: left out
    _saved(tmp_path, "cagrad", "CL_RR", 0, 0.9, 0.1)
    _saved(tmp_path, "imtl", "CL_RR", 0, 0.9, 0.1, status="running")  # not finished
    plan = budget("multi_mnist", seeds=3)
    comparison, written = report("multi_mnist-CL_RR", plan, tmp_path,
                                 ["unit_scal", "imtl", "cagrad"])  # fmt: skip
    rows = {(r.method, r.quantity): r for r in comparison.rows}
    assert set(rows) == {(m, q) for m in ("unit_scal", "cagrad") for q in ("CL", "RR", DELTA_M)}
    assert rows["unit_scal", DELTA_M].values == pytest.approx([-5.5, -11.0, -16.5])
    assert rows["cagrad", DELTA_M].values == pytest.approx([0.0])
    assert rows["unit_scal", DELTA_M].published == -8.952  # Table 3
    partial = comparison.notes[-1]
    assert partial.startswith("PARTIAL")
    # CAGrad: 2 seeds for each of its 3 alphas, then 1 more seed of the chosen one
    assert "Unit. Scal. 3/3, IMTL 0/3, CAGrad 1/7" in partial
    assert "CL (single task) 2/3, RR (single task) 1/3" in partial
    assert [p.name for p in written][:2] == ["comparison.md", "comparison.json"]
    assert "PARTIAL" in (tmp_path / "comparison.md").read_text()
    # exported: the records it was made from (not the other budget's, not the running one)
    exported, files = report("multi_mnist-CL_RR", plan, tmp_path, ["unit_scal", "imtl", "cagrad"],
                             export=tmp_path / "published")  # fmt: skip
    assert files[0] == tmp_path / "published" / "comparison.md"
    assert files[-1] == tmp_path / "published" / "reproduction.json"
    copied = sorted(p.parent.name for p in (tmp_path / "published").glob("*/record.json"))
    assert len(copied) == 7 and not any(n.endswith("-e2") or "imtl" in n for n in copied)
    again = exported_comparison(tmp_path / "published")
    assert again.markdown() == exported.markdown() == comparison.markdown()
    command = json.loads(files[-1].read_text())["again"]
    assert command == (
        "smto reproduce multi_mnist-CL_RR --seeds 3 --epochs 100 --methods unit_scal imtl "
        f"cagrad --report --root {tmp_path / 'published'}"
    )
    with pytest.raises(ConfigError, match="not an exported reproduction"):
        exported_comparison(tmp_path)


def test_the_partial_report_needs_both_references_and_a_finished_method(tmp_path, capsys):
    from smto.cli import main

    _saved(tmp_path, "unit_scal", "CL", 0, 0.9, None)
    _saved(tmp_path, "unit_scal", "CL_RR", 0, 0.9, 0.1)
    with pytest.raises(ConfigError, match="no finished single-task run of RR under"):
        report("multi_mnist-CL_RR", budget("multi_mnist", seeds=3), tmp_path)
    _saved(tmp_path, "unit_scal", "RR", 0, None, 0.1)
    with pytest.raises(ConfigError, match="no finished run of famo under"):
        report("multi_mnist-CL_RR", budget("multi_mnist", seeds=3), tmp_path, ["famo"])
    with pytest.raises(ConfigError, match="no reproduction run root"):
        report("multi_mnist-CL_RR", budget("multi_mnist"), tmp_path / "absent")
    assert main(["reproduce", "multi_mnist-CL_RR", "--export", str(tmp_path / "x")]) == 2
    assert "--export goes with --report" in capsys.readouterr().err
    code = main(["reproduce", "multi_mnist-CL_RR", "--report", "--seeds", "3", "--root",
                 str(tmp_path), "--methods", "unit_scal"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "PARTIAL" in out and "Unit. Scal. 1/3" in out and "| Unit. Scal. | -8.952 |" in out
    for seed in (1, 2):
        for tasks, accuracy, mse in (("CL", 0.9, None), ("RR", None, 0.1), ("CL_RR", 0.9, 0.1)):
            _saved(tmp_path, "unit_scal", tasks, seed, accuracy, mse)
    complete, records = finished_comparison(
        "multi_mnist-CL_RR", budget("multi_mnist", seeds=3), tmp_path, ["unit_scal"]
    )
    assert complete.notes[-1] == "every planned run has finished" and len(records) == 9
