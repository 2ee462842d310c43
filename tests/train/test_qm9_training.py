"""The QM9 problem: standardization, the metric, the split, and real training on a subset.

The molecules are the first ones of the offline build (needs the qm9 extra: rdkit and
qm9pack); the study's 10,000 / 10,000 test and val sizes are scaled down for the subset.
"""

from __future__ import annotations

import math

import pytest
import torch

from smto.data import qm9 as qm9_data
from smto.problems import QM9, create_problem
from smto.problems.qm9 import MILLI, STUDY_TARGETS
from smto.train import RunConfig, train

pytest.importorskip("rdkit", reason="the offline QM9 build needs rdkit (the qm9 extra)")
if qm9_data.find_spec("qm9pack") is None:
    pytest.skip("the offline QM9 build needs qm9pack (the qm9 extra)", allow_module_level=True)

N = 700
SPLIT = 100


@pytest.fixture(scope="module")
def molecules() -> qm9_data.QM9Data:
    data, _ = qm9_data.build_from_qm9pack(limit=N, processes=1)
    return data


@pytest.fixture
def small(monkeypatch, molecules):
    """The problem reads the subset, with 100-molecule test and val splits."""
    monkeypatch.setattr(qm9_data, "load_qm9", lambda *args, **kwargs: molecules)
    monkeypatch.setattr(qm9_data, "N_TEST", SPLIT)
    monkeypatch.setattr(qm9_data, "N_VAL", SPLIT)


def test_the_study_targets_are_pygs_indices():
    assert [qm9_data.TARGETS.index(t) for t in STUDY_TARGETS] == [
        0, 1, 2, 3, 5, 6, 12, 13, 14, 15, 11,
    ]  # fmt: skip
    assert {"homo", "lumo", "zpve", "U0Atom", "UAtom", "HAtom", "GAtom"} == MILLI


def test_targets_are_standardized_over_the_whole_dataset(small, molecules):
    problem = QM9(split="seed", limits=(50, None, None))
    columns = [qm9_data.TARGETS.index(t) for t in problem.tasks]
    y = molecules.y[:, columns]
    torch.testing.assert_close(problem.mean, y.mean(dim=0))
    torch.testing.assert_close(problem.std, y.std(dim=0))
    order = qm9_data.seeded_order(N, 0)
    batch = next(problem.batches("train", 50))
    raw = torch.stack([batch.targets[t] for t in problem.tasks], dim=1) * problem.std
    torch.testing.assert_close(raw + problem.mean, y[order[2 * SPLIT : 2 * SPLIT + 50]])


def test_split_sizes_and_limits(small):
    problem = QM9("mu_homo", split="seed", limits=(None, 30, None))
    sizes = [problem.split_size(s) for s in ("train", "val", "test")]
    assert sizes == [N - 2 * SPLIT, 30, SPLIT]
    test_batch = next(problem.batches("test", SPLIT))
    assert test_batch.inputs.x.shape[0] == SPLIT


def test_the_mae_is_in_original_units_and_millis_for_energies(small):
    problem = QM9("mu_homo_U0Atom", split="seed")
    batch = next(problem.batches("val", 40))
    # outputs off by 0.5 D for mu and 2 meV for homo and U0Atom, in standardized units
    errors = {"mu": 0.5, "homo": 0.002, "U0Atom": -0.002}
    outputs = {
        t: batch.targets[t] + errors[t] / problem.std[k] for k, t in enumerate(problem.tasks)
    }
    meter = problem.new_meter()
    meter.update(outputs, batch)
    meter.update(outputs, batch)
    values = meter.compute()
    assert values["mu"]["mae"] == pytest.approx(0.5, rel=1e-5)
    assert values["homo"]["mae"] == pytest.approx(2.0, rel=1e-4)
    assert values["U0Atom"]["mae"] == pytest.approx(2.0, rel=1e-4)


def test_losses_are_the_mse_per_task_on_standardized_targets(small):
    problem = QM9("mu_alpha", split="seed")
    batch = next(problem.batches("train", 16))
    outputs = {"mu": batch.targets["mu"] + 1.0, "alpha": batch.targets["alpha"] * 0}
    losses = problem.losses(outputs, batch.targets)
    expected = batch.targets["alpha"].pow(2).mean()
    torch.testing.assert_close(losses, torch.stack([torch.tensor(1.0), expected]))
    assert problem.loss_types() == ("mse", "mse")


def test_options_are_checked_before_any_data_is_loaded():
    from smto.errors import ConfigError

    for options, message in [
        ({"source": "web"}, "source must be one of"),
        ({"model": "dense"}, "model must be one of"),
        ({"split": "original", "seed": 3}, "no effect"),
        ({"split": "seed", "split_file": "x.txt"}, "only with split='original'"),
        ({"limits": (0, None, None)}, "limits"),
    ]:
        with pytest.raises(ConfigError, match=message):
            create_problem("qm9", "mu", **options)
    with pytest.raises(ConfigError, match="unknown task"):
        create_problem("qm9", "mu_U0_atom")


def test_the_mpnn_has_no_dropout(small):
    from smto.errors import ConfigError

    problem = QM9("mu", split="seed", limits=(20, 20, 20))
    with pytest.raises(ConfigError, match="no dropout"):
        problem.make_model(dropout=0.2)


def _config(method: str, epochs: int, **extra) -> RunConfig:
    return RunConfig(
        problem="qm9",
        tasks="_".join(STUDY_TARGETS),
        method=method,
        epochs=epochs,
        batch_size=50,
        eval_batch_size=100,
        lr=1e-3,
        scheduler="plateau",
        problem_options={"split": "seed"},
        **extra,
    )


def test_unit_scal_learns_and_records_the_maes(small, tmp_path):
    problem = QM9(split="seed")
    record = train(_config("unit_scal", 4), tmp_path, problem=problem)
    assert record.status == "completed"
    losses = [sum(e["train_loss"].values()) for e in record.history]
    assert losses[-1] < 0.8 * losses[0], losses
    val = record.history[-1]["val"]
    assert set(val) == set(STUDY_TARGETS)
    assert all(math.isfinite(v["mae"]) and v["mae"] > 0 for v in val.values())
    assert record.best_test is not None


def test_a_nan_target_makes_the_run_diverged(small, tmp_path):
    problem = QM9(split="seed")
    problem._targets["train"][3, 0] = float("nan")
    record = train(_config("unit_scal", 2), tmp_path, problem=problem)
    assert record.status == "diverged"
    assert "mu" in record.reason


def test_smto_train_problem_qm9_trains_the_study_targets(small, tmp_path, capsys):
    from smto.cli import main

    code = main(
        [
            "train", "--problem", "qm9", "--method", "unit_scal", "--epochs", "1",
            "--batch-size", "100", "--problem-option", "split=seed",
            "--problem-option", "limits=(200,100,100)", "--out", str(tmp_path), "--json",
        ]
    )  # fmt: skip
    assert code == 0
    (run,) = tmp_path.glob("qm9-*")
    assert run.name.startswith("qm9-" + "_".join(STUDY_TARGETS) + "-unit_scal-")


@pytest.mark.slow
def test_smto_report_on_qm9_runs(small, tmp_path):
    from smto.cli import main
    from smto.evaluation.reference import single_task_reference
    from smto.train import load_run
    from smto.train.records import find_runs

    root = tmp_path / "runs"
    base = {
        "problem": "qm9",
        "epochs": 1,
        "batch_size": 100,
        "problem_options": {"split": "seed", "limits": [200, 100, 100]},
    }
    problems = {}

    def run(tasks: str, **extra) -> None:
        if tasks not in problems:
            problems[tasks] = QM9(tasks, split="seed", limits=(200, 100, 100))
        train(RunConfig(tasks=tasks, **base, **extra), root, problem=problems[tasks])

    for task in ("mu", "homo"):
        run(task)
    reference = single_task_reference([load_run(d) for d in find_runs(root)])
    for method in ("unit_scal", "nash_mtl"):
        for seed in (0, 1):
            run("mu_homo", method=method, seed=seed, reference=reference.val)
    out = tmp_path / "report"
    assert (
        main(["report", str(root), "--problem", "qm9", "--tasks", "mu_homo", "--out", str(out)])
        == 0
    )
    metrics = (out / "test_metrics.md").read_text().splitlines()
    assert metrics[0] == "| Method | mu ↓ | homo ↓ | Δm (%) ↑ | MR ↓ |"
    assert any(line.startswith("| Nash-MTL") for line in metrics), metrics
