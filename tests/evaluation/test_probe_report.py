"""``smto report`` on probed runs: the probe frame and the gradient-conflict figure."""

from __future__ import annotations

import pytest

pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from smto.evaluation.reference import single_task_reference
from smto.evaluation.report import probe_frame, write_conflict_figures, write_report
from smto.train import RunConfig, load_run, train
from smto.train.records import find_runs

BASE = {
    "problem": "toy_regression",
    "epochs": 2,
    "batch_size": 64,
    "problem_options": {"sizes": [128, 64, 64]},
}
PROBES = {"cosine_every": 1, "pairs_every": 1, "samples": 3}


def test_a_report_of_probed_runs_draws_their_conflicts(tmp_path):
    root = tmp_path / "runs"
    for task in ("T1", "T2"):
        train(RunConfig(tasks=task, **BASE), root)
    reference = single_task_reference([load_run(d) for d in find_runs(root)])
    for method, probes in (("unit_scal", PROBES), ("cagrad", None)):
        config = RunConfig(tasks="T1_T2", method=method, reference=reference.val, **BASE)
        train(RunConfig(**{**config.to_dict(), "probes": probes}), root)
    out = tmp_path / "report"
    # The other figures are write_figures' (tested with the report command); it calls this.
    report = write_report(root, "toy_regression", "T1_T2", out, figures=False)
    files = write_conflict_figures(report.results, out)
    assert files == [out / "conflicts_unit_scal.png", out / "conflicts_unit_scal.pdf"]
    assert (out / "conflicts_unit_scal.pdf").read_bytes()[:4] == b"%PDF"
    assert not (out / "conflicts_cagrad.png").exists()  # not probed
    frame = probe_frame(report.results)
    assert set(frame["method_name"]) == {"unit_scal"} and sorted(frame["epoch"]) == [0, 1]
    record = next(r for r in report.results if r.method == "unit_scal").runs[0]
    assert frame["probes.inter_sample.cosine.p2_5"].tolist() == [
        e["probes"]["inter_sample"]["cosine"]["p2_5"] for e in record.history
    ]
    assert frame["probes.steps.pairs"].tolist() == [2, 2]  # two batches of 64 per epoch
