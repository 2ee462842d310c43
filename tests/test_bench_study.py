"""`smto bench study`: a study's CPU time from its sweep files (runs x epochs x seconds per
epoch), checked by hand on a toy study with injected timings."""

from __future__ import annotations

import pytest

from smto.bench import cli
from smto.bench.study import EpochTimer, estimate, parse_given, planned_runs, study_sweeps
from smto.errors import ConfigError
from smto.sweep.spec import load_sweep

STUDY = """
problem = "toy_regression"
tasks = "T1_T2"
methods = ["unit_scal", "cagrad"]
root = "runs"
reference_sweeps = ["toy-single.toml"]

[seeds]
runs = 3
extra = 2

[fixed]
epochs = 4
batch_size = 64

[grid]
lr = [0.001, 0.01]

[method_grids.cagrad]
alpha = [0.2, 0.5, 0.8]
"""

REFERENCE = """
problem = "toy_regression"
tasks = ["T1", "T2"]
methods = ["unit_scal"]
root = "runs"

[seeds]
runs = 2
extra = 1

[fixed]
epochs = 3

[grid]
lr = [0.001, 0.01]
"""


@pytest.fixture
def study(tmp_path):
    (tmp_path / "toy-single.toml").write_text(REFERENCE)
    path = tmp_path / "toy.toml"
    path.write_text(STUDY)
    return path


def test_the_planned_runs_are_configurations_times_seeds_plus_the_extra_seeds(study):
    # unit_scal: 2 lrs x 3 seeds + 2 extra = 8 runs; cagrad: 2 lrs x 3 alphas x 3 + 2 = 20
    assert planned_runs(load_sweep(study)) == {"unit_scal": (8, 32), "cagrad": (20, 80)}
    # the references: per task, 2 lrs x 2 seeds + 1 extra = 5 runs of 3 epochs
    assert planned_runs(load_sweep(study.parent / "toy-single.toml")) == {"unit_scal": (10, 30)}


def test_the_estimate_multiplies_epochs_by_the_given_seconds(study):
    sweeps = study_sweeps([study])
    assert [s.name for s in sweeps] == ["toy-single", "toy"]  # the reference first, once
    given = parse_given(["unit_scal=1.5", "cagrad=3", "toy-single:unit_scal=0.5"])
    result = estimate(sweeps, given)
    seconds = {(r.sweep, r.method): r.seconds for r in result.rows}
    assert seconds == {
        ("toy-single", "unit_scal"): 30 * 0.5,  # the sweep's own timing wins
        ("toy", "unit_scal"): 32 * 1.5,
        ("toy", "cagrad"): 80 * 3.0,
    }
    assert result.seconds == pytest.approx(15 + 48 + 240)
    table = result.format()
    assert f"{(15 + 48 + 240) / 3600:.2f}" in table.splitlines()[-1]
    assert estimate(study_sweeps([study], references=False), given).seconds == 288


def test_a_method_without_timing_is_measured_or_named(study):
    sweeps = study_sweeps([study])
    with pytest.raises(ConfigError, match="no seconds per epoch for cagrad in sweep toy"):
        estimate(sweeps, {"unit_scal": 1.0})
    asked = []
    result = estimate(sweeps, {"unit_scal": 1.0}, lambda sweep, m: asked.append(m) or 2.0)
    assert asked == ["cagrad"] and result.seconds == 30 + 32 + 80 * 2.0
    assert [r.source for r in result.rows] == ["given", "given", "measured"]


@pytest.mark.parametrize("item", ["famo", "famo=", "famo=0", "famo=-1", "=2", "famo=nan"])
def test_bad_timings_are_clear_errors(item):
    with pytest.raises(ConfigError, match="METHOD=SECONDS"):
        parse_given([item])


@pytest.mark.slow  # about 2 s, most of it torch's first optimizer import
def test_the_engine_timer_scales_its_measured_parts_to_the_full_splits(study):
    sweep = load_sweep(study.parent / "toy-single.toml")
    cost = EpochTimer().measure(sweep, "unit_scal")  # the toy: whole epochs, 512/256/1024
    assert (cost.steps, cost.val, cost.test) == (512 // 256, 256, 1024)  # batch 256
    assert 0 < cost.step_seconds < 1 and 0 < cost.sample_seconds < 0.01
    assert cost.seconds(0.0) == pytest.approx(
        cost.step_seconds * 2 + cost.sample_seconds * 256 + cost.rest_seconds
    )
    assert cost.seconds(1.0) - cost.seconds(0.0) == pytest.approx(cost.sample_seconds * 1024)


def test_the_command_prints_the_table(study, capsys):
    assert (
        cli.main(["study", str(study), "--seconds", "unit_scal=1", "cagrad=2", "--no-measure"]) == 0
    )
    out = capsys.readouterr().out
    assert "cagrad" in out and "toy-single" in out and out.splitlines()[-1].startswith("total")
    assert cli.main(["study", str(study), "--seconds", "unit_scal=1", "--no-measure"]) == 2
