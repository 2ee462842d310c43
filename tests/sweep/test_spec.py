"""Sweep files: validation names the field of every error before anything runs; the plan."""

from __future__ import annotations

from pathlib import Path

import pytest
from sweep_helpers import toy_sweep, write_sweep

from smto.cli import main
from smto.sweep import SweepError, load_sweep
from smto.sweep.plan import configurations, slots

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"
MULTI_MNIST = sorted(SWEEPS.glob("multi_mnist-*.toml"))


def errors_of(path: Path) -> list[str]:
    with pytest.raises(SweepError) as info:
        load_sweep(path)
    return info.value.errors


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"methods": ["unit_scal", "cagard"]}, "methods[1]: unknown method 'cagard'"),
        (
            {"methods": ["cagrad"], "method_grids": {"cagrad": {"alpah": [0.2]}}},
            "method_grids.cagrad.alpah: unknown hyperparameter of cagrad; valid: alpha",
        ),
        (
            {"methods": ["cagrad"], "method_grids": {"cagrad": {"alpha": [0.2, "x"]}}},
            "method_grids.cagrad.alpha[1] = 'x': hyperparameter 'alpha' of method 'cagrad'",
        ),
        (
            {"methods": ["famo"], "method_params": {"famo": {"gamma": -1.0}}},
            "method_params.famo.gamma = -1.0: gamma (logit weight decay) must be",
        ),
        ({"grid": {"lr": [0.001, -0.5]}}, "grid.lr[1] = -0.5: lr must be a number > 0"),
        ({"grid": {"dropout": [0.1, 1.5]}}, "grid.dropout[1] = 1.5: dropout must be in [0, 1)"),
        ({"grid": {"lr": [0.001, 0.001]}}, "grid.lr: repeated values"),
        ({"grid": {"learning_rate": [0.1]}}, "grid.learning_rate: not a run setting"),
        ({"fixed": {"epochs": 2.5}}, "fixed.epochs = 2.5: epochs must be an integer >= 1"),
        ({"fixed": {"seed": 3}}, "fixed.seed: set by the sweep itself"),
        ({"seeds": {"runs": 0}}, "seeds.runs: must be an integer >= 1"),
        ({"metods": ["unit_scal"]}, "unknown key(s) ['metods']"),
        ({"tasks": "T1_T3"}, "tasks: unknown task(s) ['T3']"),
        ({"problem": "multi_mnsit"}, "problem: unknown problem 'multi_mnsit'"),
        ({"seeds": {"runs": 2, "extra": 1}}, "seeds.extra: stage 2 of a multi-task sweep"),
        (
            {"fixed": {"optimizer": "per_task_adam", "epochs": 2}, "methods": ["pcgrad"]},
            "configuration {'tasks': 'T1_T2', 'method': 'pcgrad', 'lr': 0.001}: per_task_adam",
        ),
    ],
)
def test_a_typo_is_rejected_naming_its_field(tmp_path, overrides, field):
    errors = errors_of(toy_sweep(tmp_path, "typo", **overrides))
    assert any(e.startswith(field) for e in errors), errors


def test_all_errors_are_reported_at_once(tmp_path):
    path = toy_sweep(
        tmp_path, "typos", methods=["unit_scal", "nash"], grid={"lr": [-1.0], "dropuot": [0.1]}
    )
    errors = errors_of(path)
    assert [e.split(":")[0] for e in errors] == ["grid.dropuot", "grid.lr[0] = -1.0"]


def test_sweep_run_with_a_typo_runs_nothing(tmp_path, capsys):
    path = toy_sweep(tmp_path, "typo", methods=["unit_scal", "cagard"])
    assert main(["sweep", "run", str(path), "--no-progress"]) == 2
    assert "methods[1]: unknown method 'cagard'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("path", MULTI_MNIST, ids=lambda p: p.name)
def test_the_multi_mnist_sweeps_are_valid(path):
    sweep = load_sweep(path)
    assert sweep.problem == "multi_mnist"
    if not sweep.single_task:
        assert sweep.reference_sweeps and sweep.extra > 0


def test_the_study_grid_of_multi_mnist_cl_rr():
    sweep = load_sweep(SWEEPS / "multi_mnist-CL_RR.toml")
    assert len(sweep.methods) == 16
    assert (sweep.runs, sweep.extra) == (5, 5)
    shared = 7 * 6
    own = {"auto_lambda": 7, "cagrad": 3, "cdtt": 5, "famo": 3, "rotograd": 4}
    assert sweep.n_configurations == sum(shared * own.get(m, 1) for m in sweep.methods)


def test_the_study_grid_of_qm9():
    sweep = load_sweep(SWEEPS / "qm9-all.toml")
    assert sweep.problem == "qm9" and len(sweep.methods) == 8
    own = {"auto_lambda": 3, "cagrad": 3, "cdtt": 5, "famo": 3}
    assert sweep.n_configurations == sum(4 * own.get(m, 1) for m in sweep.methods)
    single = load_sweep(SWEEPS / "qm9-single_task.toml")
    assert single.n_configurations == 11 * 4


def test_the_study_grid_of_cityscapes():
    sweep = load_sweep(SWEEPS / "cityscapes-S_D_I.toml")
    assert sweep.problem == "cityscapes" and len(sweep.methods) == 9
    own = {"auto_lambda": 7, "cagrad": 3, "cdtt": 5, "famo": 3, "rotograd": 4}
    assert sweep.n_configurations == sum(12 * own.get(m, 1) for m in sweep.methods)
    assert load_sweep(SWEEPS / "cityscapes-single_task.toml").n_configurations == 3 * 12


STEPS = (
    ("1-r50-S_D-256x128-7c", "resnet50", "S_D", [256, 128], 7),
    ("2-r18-S_D-256x128-7c", "resnet18", "S_D", [256, 128], 7),
    ("3-r18-S_D_I-256x128-7c", "resnet18", "S_D_I", [256, 128], 7),
    ("4-r18-S_D_I-512x256-7c", "resnet18", "S_D_I", [512, 256], 7),
)


@pytest.mark.parametrize(("name", "backbone", "tasks", "shape", "classes"), STEPS)
def test_the_cityscapes_progression_steps(name, backbone, tasks, shape, classes):
    multi = load_sweep(SWEEPS / f"cityscapes-progression-{name}.toml")
    single = load_sweep(SWEEPS / f"cityscapes-progression-{name}-single_task.toml")
    options = {"backbone": backbone, "shape": shape, "classes": classes}
    for sweep in (multi, single):
        assert sweep.fixed["problem_options"] == options
        assert sweep.fixed["epochs"] == 150 and sweep.fixed["batch_size"] == 32
        assert sweep.root == multi.root and Path(multi.root).name == name
    assert multi.tasks == (tasks,) and multi.methods == ("unit_scal", "imtl")
    assert multi.n_configurations == 2 * 12
    assert single.n_configurations == len(tasks.split("_")) * 12


ELICH = (
    ("cityscapes-segnet", "S_D", 300, 64, 100),
    ("cityscapes-deeplab", "S_D", 300, 64, 100),
    ("nyuv2-segnet", "S_D_N", 200, 8, 100),
    ("nyuv2-deeplab", "S_D_N", 200, 8, 100),
    ("celeba-r18", None, 100, 512, 30),
)


@pytest.mark.parametrize(("name", "tasks", "epochs", "batch", "step"), ELICH)
def test_elich_et_als_sweeps(name, tasks, epochs, batch, step):
    multi = load_sweep(SWEEPS / f"elich-{name}.toml")
    per_task = load_sweep(SWEEPS / f"elich-{name}-per_task.toml")
    single = load_sweep(SWEEPS / f"elich-{name}-single_task.toml")
    n_tasks = len((tasks or multi.tasks[0]).split("_"))
    assert tasks is None or multi.tasks == (tasks,)
    assert not name.startswith("celeba") or n_tasks == 40
    for sweep in (multi, per_task, single):
        fixed = sweep.fixed
        assert (fixed["epochs"], fixed["batch_size"]) == (epochs, batch)
        assert (fixed["scheduler"], fixed["step_size"], fixed["step_factor"]) == ("step", step, 0.5)
        assert sweep.root == multi.root and sweep.fixed["problem_options"] == multi.fixed[
            "problem_options"]  # fmt: skip
    assert multi.fixed["delta_m_convention"] == per_task.fixed["delta_m_convention"] == "elich"
    assert set(multi.grid["optimizer"]) == {"adam", "sgd", "signsgd"}
    assert set(per_task.grid["optimizer"]) == {"per_task_adam", "mtl_io"}
    assert single.grid["optimizer"] == ["adam"] and len(single.tasks) == n_tasks
    lrs = len(multi.grid["lr"])
    assert multi.n_configurations == 7 * 3 * lrs and per_task.n_configurations == 2 * lrs


def test_fields_valid_only_together_are_checked_together(tmp_path):
    base = {"epochs": 2, "problem_options": {"sizes": [256, 64, 64]}}
    step = {"scheduler": "step", "step_size": 3, "step_factor": 0.5}
    assert load_sweep(toy_sweep(tmp_path, "step", fixed={**base, **step})).fixed["step_size"] == 3
    toy_sweep(tmp_path, "grid", fixed={**base, "scheduler": "step"}, grid={"step_size": [2, 4]})
    assert load_sweep(tmp_path / "grid.toml").n_configurations == 2
    toy_sweep(tmp_path, "no-size", fixed={**base, "scheduler": "step"})
    assert any("needs step_size" in e for e in errors_of(tmp_path / "no-size.toml"))
    toy_sweep(tmp_path, "stray", fixed={**base, "step_size": 3})
    assert any("read only with scheduler='step'" in e for e in errors_of(tmp_path / "stray.toml"))


def test_the_plan_has_every_configuration_and_seed(tmp_path):
    path = toy_sweep(
        tmp_path,
        "plan",
        methods=["unit_scal", "cagrad"],
        grid={"lr": [0.001, 0.01], "dropout": [0.0, 0.2]},
        method_grids={"cagrad": {"alpha": [0.2, 0.5, 0.8]}},
        seeds={"runs": 3, "extra": 0, "first": 10},
    )
    sweep = load_sweep(path)
    configs = configurations(sweep)
    assert len(configs) == 4 + 4 * 3
    assert len({c.key for c in configs}) == len(configs)
    cagrad = [c for c in configs if c.method == "cagrad"]
    assert cagrad[0].settings == {"lr": 0.001, "dropout": 0.0, "cagrad.alpha": 0.2}
    assert cagrad[0].config.method_params == {"alpha": 0.2}
    planned = slots(configs, sweep.stage1_seeds, 1)
    assert len(planned) == 16 * 3
    assert len({s.key for s in planned}) == len(planned)
    assert sorted({s.seed for s in planned}) == [10, 11, 12]
    assert list(sweep.stage2_seeds) == []


def test_a_list_of_tasks_is_a_single_task_sweep_per_task(tmp_path):
    path = toy_sweep(tmp_path, "single", tasks=["T1", "T2"], seeds={"runs": 2, "extra": 3})
    sweep = load_sweep(path)
    assert sweep.single_task
    assert [c.tasks for c in configurations(sweep)] == ["T1", "T1", "T2", "T2"]
    assert (list(sweep.stage1_seeds), list(sweep.stage2_seeds)) == ([0, 1], [2, 3, 4])
    errors = errors_of(toy_sweep(tmp_path, "sets", tasks=["T1_T2", "T1"]))
    assert errors[0].startswith("tasks: a list is a single-task sweep over each task")


def test_reference_sweeps_must_cover_the_tasks(tmp_path):
    toy_sweep(tmp_path, "ref-T1", tasks="T1")
    path = toy_sweep(tmp_path, "main", reference_sweeps=["ref-T1.toml"])
    assert errors_of(path) == ["reference: no single-task reference for task(s) ['T2']"]
    toy_sweep(tmp_path, "cycle-a", reference_sweeps=["cycle-b.toml"])
    toy_sweep(tmp_path, "cycle-b", reference_sweeps=["cycle-a.toml"])
    cycle = "a cycle of sweeps (cycle-a.toml -> cycle-b.toml -> cycle-a.toml)"
    assert any(cycle in e for e in errors_of(tmp_path / "cycle-a.toml"))
    write_sweep(tmp_path, "single-ref", **_single(reference_sweeps=["ref-T1.toml"]))
    assert errors_of(tmp_path / "single-ref.toml") == [
        "reference: a single-task sweep is itself a reference; remove it"
    ]


def _single(**fields):
    return {"problem": "toy_regression", "tasks": "T1", "methods": ["unit_scal"], **fields}
