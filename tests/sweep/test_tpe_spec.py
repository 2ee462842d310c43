"""TPE sweep files: ranges, the budget and the sampler's settings are validated before
anything runs, each error naming its field."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from sweep_helpers import toy_sweep

from smto.cli import main
from smto.sweep import Sweep, SweepError, load_sweep
from smto.sweep.space import Range

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"
TPE = {"sampler": "tpe", "tpe": {"trials": 4}, "grid": {"lr": {"low": 1e-4, "high": 1e-2}}}


def errors_of(path: Path) -> list[str]:
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    return info.value.errors


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (
            {"grid": {"lr": {"low": 1e-4, "high": 1e-2}}},
            'grid.lr: a range needs sampler = "tpe"',
        ),
        ({**TPE, "grid": {"lr": {"low": 0.1, "high": 0.01}}}, "grid.lr: low (0.1) must be below"),
        (
            {**TPE, "grid": {"lr": {"low": 0.0, "high": 0.1, "log": True}}},
            "grid.lr: a log range needs low > 0, got 0.0",
        ),
        ({**TPE, "grid": {"lr": {"low": 1e-4, "hgih": 0.1}}}, "grid.lr: unknown range key(s)"),
        ({**TPE, "grid": {"lr": {"low": 1e-4, "hgih": 0.1}}}, "grid.lr.high: missing"),
        ({**TPE, "grid": {"lr": {"low": "small", "high": 0.1}}}, "grid.lr.low: must be a finite"),
        ({**TPE, "grid": {"lr": {"low": 1e-4, "high": 0.1, "log": 1}}}, "grid.lr.log: must be"),
        (
            {**TPE, "grid": {"lr": {"low": 1e-4, "high": 0.1, "step": 0.01, "log": True}}},
            "grid.lr: step and log cannot be combined",
        ),
        (
            {**TPE, "grid": {"dropout": {"low": 0.0, "high": 1.5}}},
            "grid.dropout.high = 1.5: dropout must be in [0, 1)",
        ),
        (
            {
                **TPE,
                "methods": ["cagrad"],
                "method_grids": {"cagrad": {"alpha": {"low": 0.5, "high": 0.2}}},
            },
            "method_grids.cagrad.alpha: low (0.5) must be below high (0.2)",
        ),
        ({**TPE, "tpe": {"seed": 1}}, "tpe.trials: missing; a TPE sweep needs its budget"),
        ({"sampler": "tpe", "grid": {"lr": [0.1, 0.01]}}, "tpe.trials: missing"),
        ({**TPE, "tpe": {"trials": 0}}, "tpe.trials: must be an integer >= 1, got 0"),
        ({**TPE, "tpe": {"trials": 2, "pruner": "hyperband"}}, "tpe.pruner: must be one of"),
        ({**TPE, "tpe": {"trials": 2, "trails": 3}}, "tpe: unknown key(s) ['trails']"),
        ({"tpe": {"trials": 4}}, 'tpe: only for sampler = "tpe"'),
        ({"sampler": "random"}, "sampler: must be one of grid, tpe, got 'random'"),
        ({**TPE, "seeds": {"runs": 2}}, "seeds.runs: a TPE sweep runs each configuration"),
        (
            {**TPE, "grid": {"lr": [0.1, 0.01], "dropout": [0.0, 0.1]}, "tpe": {"trials": 5}},
            "tpe.trials: 5 trials exceed the 4 configuration(s) of unit_scal's search space",
        ),
        (
            {**TPE, "grid": {"problem_options": [{"sizes": [64, 64, 64]}]}},
            "grid.problem_options[0]: a TPE choice must be a number, string or boolean",
        ),
    ],
)
def test_a_bad_tpe_sweep_is_rejected_naming_its_field(tmp_path, overrides, field):
    errors = errors_of(toy_sweep(tmp_path, "bad", **overrides))
    assert any(e.startswith(field) for e in errors), errors


def test_a_tpe_sweep_reads_back_its_space_and_settings(tmp_path):
    path = toy_sweep(
        tmp_path,
        "tpe",
        sampler="tpe",
        methods=["unit_scal", "cagrad"],
        tpe={"trials": 6, "seed": 7, "pruner": "none", "warmup_epochs": 2},
        grid={"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "weight_decay": [0.0, 0.001]},
        method_grids={"cagrad": {"alpha": {"low": 1, "high": 3}}},
        seeds={"extra": 0},
    )
    sweep = load_sweep(path)
    assert sweep.sampler == "tpe"
    assert (sweep.tpe.trials, sweep.tpe.seed, sweep.tpe.pruner) == (6, 7, "none")
    assert (sweep.tpe.warmup_epochs, sweep.tpe.startup_trials) == (2, 10)  # 10: the default
    assert sweep.grid["lr"] == Range(1e-4, 1e-2, log=True)
    assert sweep.space("cagrad") == {
        "lr": Range(1e-4, 1e-2, log=True),
        "weight_decay": [0.0, 0.001],
        "cagrad.alpha": Range(1, 3),
    }
    assert sweep.method_grids["cagrad"]["alpha"].integer  # 1, 2 or 3
    assert sweep.method_grids["cagrad"]["alpha"].size == 3
    assert sweep.n_configurations == math.inf
    assert Sweep.from_dict(sweep.to_dict()) == sweep  # what a study stores reads back


def test_a_grid_sweep_stores_no_sampler_fields(tmp_path):
    """Studies of grid sweeps stored before TPE existed still match their files."""
    data = load_sweep(toy_sweep(tmp_path, "grid")).to_dict()
    assert "sampler" not in data and "tpe" not in data
    assert Sweep.from_dict(data).sampler == "grid"


def test_check_describes_the_tpe_budget(capsys):
    assert main(["sweep", "check", str(SWEEPS / "multi_mnist-small-tpe.toml")]) == 0
    assert "TPE, 2 search(es) of 12 trials = at most 24 runs" in capsys.readouterr().out
