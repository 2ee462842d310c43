"""Two stages: stage 2 gives the extra seeds to the configuration a hand computation picks
from the stage-1 records; single-task reference sweeps feed the multi-task sweep."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from sweep_helpers import FAST, toy_sweep, trials_by_slot

from smto.evaluation.reference import Reference
from smto.sweep.driver import WorkerSettings, run_sweep
from smto.sweep.study import STAGE2_ATTR
from smto.train import load_run

SETTINGS = WorkerSettings(**FAST)
FIXED = {"epochs": 2, "batch_size": 64, "problem_options": {"sizes": [256, 64, 64]}}


def stage_runs(study, root: Path, stage: int):
    return [load_run(root / s.key) for s in study.planned() if s.stage == stage]


def mean_by_settings(runs, value) -> dict[str, float]:
    """Mean of ``value(run)`` over the seeds of each configuration, keyed by its settings."""
    values: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        settings = {k: run.config[k] for k in ("lr", "dropout")}
        settings.update(run.config["method_params"])
        values[json.dumps(settings, sort_keys=True)].append(value(run))
    return {k: sum(v) / len(v) for k, v in values.items()}


def test_stage_2_continues_the_configuration_of_the_best_mean_validation_delta_m(tmp_path):
    reference = {"T1": {"mse": 0.35}, "T2": {"mse": 30.0}}
    Reference("toy_regression", reference, reference).save(tmp_path / "reference.json")
    path = toy_sweep(
        tmp_path,
        "two-stages",
        methods=["unit_scal", "cagrad"],
        reference="reference.json",
        seeds={"runs": 2, "extra": 2},
        fixed=FIXED,
        grid={"lr": [0.002, 0.02], "dropout": [0.0, 0.3]},
        method_grids={"cagrad": {"alpha": [0.2, 0.8]}},
    )
    study = run_sweep(path, settings=SETTINGS, progress=False)
    root = tmp_path / "runs"
    stage1 = stage_runs(study, root, 1)
    assert len(stage1) == (4 + 8) * 2
    assert all(run.config["reference"] == reference for run in stage1)  # best epoch by Delta_m

    def delta_m(run) -> float:  # equation 1 by hand: MSE is lower-is-better
        gains = [-(run.best_val[t]["mse"] - reference[t]["mse"]) / reference[t]["mse"]
                 for t in ("T1", "T2")]  # fmt: skip
        return 100 * sum(gains) / 2

    for method in ("unit_scal", "cagrad"):
        means = mean_by_settings([r for r in stage1 if r.config["method"] == method], delta_m)
        best = max(means, key=means.get)
        stage2 = [r for r in stage_runs(study, root, 2) if r.config["method"] == method]
        assert sorted(r.config["seed"] for r in stage2) == [2, 3]
        assert set(mean_by_settings(stage2, delta_m)) == {best}
    assert len(study.storage.get_study_user_attrs(study.study_id)[STAGE2_ATTR]) == 2


def test_reference_sweeps_run_first_and_make_the_reference(tmp_path):
    for task in ("T1", "T2"):
        toy_sweep(tmp_path, f"ref-{task}", tasks=task, seeds={"runs": 2, "extra": 1},
                  fixed=FIXED, grid={"lr": [0.002, 0.02]})  # fmt: skip
    path = toy_sweep(
        tmp_path,
        "main",
        reference_sweeps=["ref-T1.toml", "ref-T2.toml"],
        seeds={"runs": 1, "extra": 1},
        fixed=FIXED,
    )
    study = run_sweep(path, settings=SETTINGS, progress=False)
    root = tmp_path / "runs"
    for task in ("T1", "T2"):
        trials = trials_by_slot(study.storage, f"ref-{task}")
        assert len(trials) == 2 * 2 + 1
        runs = [load_run(root / key) for key in trials]
        means = mean_by_settings(runs[:4], lambda r, t=task: r.best_by_metric[f"{t}/mse"]["val"])
        best = min(means, key=means.get)  # lower MSE is better
        assert set(mean_by_settings(runs[4:], lambda r: 0.0)) == {best}
    reference = Reference.load(root / "main.reference.json")
    assert sorted(reference.val) == ["T1", "T2"]
    assert all(load_run(root / s.key).config["reference"] == reference.val for s in study.planned())
    assert len(study.planned()) == 2 * 1 + 1
    again = run_sweep(path, settings=SETTINGS, progress=False)  # a re-run skips what is done
    assert sum(len(t) for t in trials_by_slot(again.storage, "main").values()) == 3
