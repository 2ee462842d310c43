"""The training engine on the toy problem: determinism, resume, divergence, records."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import smto
from smto.errors import ConfigError
from smto.method import LossMethod, Scale
from smto.problems.toy import ToyRegression
from smto.registry import _ALIASES, _REGISTRY, MethodSpec
from smto.train import RunConfig, load_run, load_runs, run_dir, train

TOY = {"problem": "toy_regression", "tasks": "T1_T2", "batch_size": 64, "lr": 3e-3}


def history_without_times(record):
    times = ("seconds", "train_seconds")
    return [{k: v for k, v in entry.items() if k not in times} for entry in record.history]


def test_a_run_records_everything(tmp_path):
    config = RunConfig(**TOY, method="cagrad", epochs=3)
    record = train(config, tmp_path)
    assert record.status == "completed"
    assert [e["epoch"] for e in record.history] == [0, 1, 2]
    for entry in record.history:
        assert set(entry["train_loss"]) == set(entry["weights"]) == {"T1", "T2"}
        assert set(entry["val"]["T1"]) == {"mse"}
        assert entry["lr"] > 0
    lrs = [e["lr"] for e in record.history]
    assert lrs[1] == pytest.approx(lrs[0] * 0.95)
    scores = [e["score"] for e in record.history]
    assert record.best_epoch == max(range(3), key=scores.__getitem__)
    assert record.best_test == record.history[record.best_epoch]["test"]
    assert record.smto_version == smto.__version__
    on_disk = load_run(run_dir(config, tmp_path))
    assert on_disk.to_dict() == record.to_dict()
    assert (run_dir(config, tmp_path) / "best_model.pt").exists()
    runs, epochs = load_runs(tmp_path)
    assert len(runs) == 1 and len(epochs) == 3
    assert runs.loc[0, "config.method"] == "cagrad"
    assert runs.loc[0, "best_test.T2.mse"] == record.best_test["T2"]["mse"]
    assert list(epochs["weights.T1"]) == [e["weights"]["T1"] for e in record.history]


def test_same_seed_gives_identical_histories(tmp_path):
    config = RunConfig(**TOY, method="rlw_normal", epochs=2, dropout=0.2)
    a = train(config, tmp_path / "a")
    b = train(config, tmp_path / "b")
    assert history_without_times(a) == history_without_times(b)
    other = train(RunConfig(**TOY, method="rlw_normal", epochs=2, dropout=0.2, seed=1), tmp_path)
    assert history_without_times(other) != history_without_times(a)


WEIGHTS_FROM_STATE = {"famo", "dwa", "uw", "auto_lambda", "stch", "gradnorm", "go4align", "dtp"}
"""Methods whose task weights come from their own learned or per-epoch state."""


class _Stop(Exception):
    pass


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("famo", {}),
        ("dwa", {}),
        ("pcgrad", {}),
        ("uw", {}),
        ("rotograd", {}),
        ("auto_lambda", {}),
        ("gls", {}),
        ("db_mtl", {}),
        ("stch", {"warmup_epochs": 1}),  # the scalarization takes over in epoch 2
        ("gradnorm", {}),  # learned weights from epoch 1
        ("go4align", {"num_groups": 2, "robust_step_size": 0.1}),  # the risk term moves
        ("dtp", {}),
    ],
)
def test_a_stopped_run_resumes_to_the_uninterrupted_numbers(tmp_path, method, params):
    config = RunConfig(**TOY, method=method, method_params=params, epochs=4, dropout=0.1)
    full = train(config, tmp_path / "full")

    def stop_after_two(record):
        if len(record.history) == 2:
            raise _Stop

    with pytest.raises(_Stop):
        train(config, tmp_path / "cut", on_epoch_end=stop_after_two)
    assert load_run(run_dir(config, tmp_path / "cut")).status == "failed"
    resumed = train(config, tmp_path / "cut")
    assert resumed.status == "completed"
    assert history_without_times(resumed) == history_without_times(full)
    assert resumed.best_test == full.best_test
    if method in WEIGHTS_FROM_STATE:  # the resumed epochs are ones the state has moved
        assert full.history[3]["weights"] != full.history[0]["weights"]


def test_an_interrupted_run_is_recorded_as_such(tmp_path):
    config = RunConfig(**TOY, method="unit_scal", epochs=3)

    def interrupt(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path, on_epoch_end=interrupt)
    record = load_run(run_dir(config, tmp_path))
    assert record.status == "interrupted" and len(record.history) == 1
    assert train(config, tmp_path).status == "completed"


class _NaNAfter(LossMethod):
    """Uniform weights, but from the given step on its objective is NaN (as a diverging
    method would make it)."""

    display_name = "NaN after"
    scale = Scale.MEAN

    def __init__(self, n_tasks: int, after: int = 10) -> None:
        super().__init__(n_tasks)
        self.after = after
        self.steps = 0

    def terms(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        self.steps += 1
        factor = math.nan if self.steps > self.after else 1.0 / self.n_tasks
        weights = torch.full_like(losses.detach(), factor)
        return losses * weights, weights


def test_a_diverging_run_ends_as_diverged(tmp_path, monkeypatch):
    monkeypatch.setitem(_REGISTRY, "nan_after", MethodSpec("nan_after", _NaNAfter, {}, "NaN"))
    monkeypatch.setitem(_ALIASES, "nanafter", "nan_after")
    config = RunConfig(**TOY, method="nan_after", method_params={"after": 20}, epochs=5)
    record = train(config, tmp_path)  # 8 steps per epoch: the 21st step's terms are NaN
    assert record.status == "diverged"
    assert (record.diverged_epoch, record.diverged_step) == (2, 4)  # at that step, not later
    assert "epoch 2, step 4: non-finite objective term of T1 = nan, T2 = nan" in record.reason
    assert len(record.history) == 2
    assert load_run(run_dir(config, tmp_path)).status == "diverged"
    assert train(config, tmp_path).status == "diverged"  # a finished run is not re-run


class _NaNGradientFrom(torch.autograd.Function):
    """The identity, whose gradient is NaN from the ``start``-th backward call on."""

    calls = 0
    start = 0

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        _NaNGradientFrom.calls += 1
        return grad * math.nan if _NaNGradientFrom.calls >= _NaNGradientFrom.start else grad


@pytest.mark.parametrize("method", ["unit_scal", "pcgrad", "mgda_ub", "nash_mtl"])
def test_a_nan_task_gradient_ends_the_run_at_its_step_naming_the_task(
    tmp_path, monkeypatch, method
):
    """Finite losses, but from the 13th step on T2's head output has a NaN gradient (each
    head is traversed once per step, so the 13th backward call through it is step 13)."""
    monkeypatch.setattr(_NaNGradientFrom, "calls", 0)
    monkeypatch.setattr(_NaNGradientFrom, "start", 13)

    def losses(self, outputs, targets):
        t2 = _NaNGradientFrom.apply(outputs["T2"])
        return torch.stack([((o - targets[t]) ** 2).mean() for t, o in [
            ("T1", outputs["T1"]), ("T2", t2)
        ]])  # fmt: skip

    monkeypatch.setattr(ToyRegression, "losses", losses)
    config = RunConfig(**TOY, method=method, epochs=3)
    record = train(config, tmp_path)  # 8 steps per epoch: step 13 is epoch 1's step 4
    assert record.status == "diverged"
    assert (record.diverged_epoch, record.diverged_step) == (1, 4)
    assert "epoch 1, step 4: non-finite" in record.reason
    assert "T2" in record.reason and "T1 =" not in record.reason
    assert len(record.history) == 1


def test_selection_by_validation_delta_m(tmp_path):
    reference = {"T1": {"mse": 0.2}, "T2": {"mse": 40.0}}
    config = RunConfig(**TOY, method="unit_scal", epochs=3, reference=reference)
    record = train(config, tmp_path)
    assert record.selection == "delta_m"
    for entry in record.history:
        expected = -50 * (
            (entry["val"]["T1"]["mse"] - 0.2) / 0.2 + (entry["val"]["T2"]["mse"] - 40) / 40
        )
        assert entry["score"] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("optimizer", "scheduler", "method"),
    [
        ("sgd", "plateau", "unit_scal"),
        ("signsgd", "none", "imtl"),
        ("per_task_adam", "exponential", "uw_o"),
    ],
)
def test_optimizers_and_schedulers(tmp_path, optimizer, scheduler, method):
    config = RunConfig(
        **{**TOY, "lr": 1e-3}, method=method, optimizer=optimizer, scheduler=scheduler, epochs=2
    )
    record = train(config, tmp_path)
    assert record.status == "completed"
    assert all(math.isfinite(v) for e in record.history for v in e["weights"].values())


def test_the_step_scheduler_halves_the_lr_every_step_size_epochs(tmp_path):
    config = RunConfig(**TOY, method="unit_scal", scheduler="step", step_size=2, epochs=5)
    lrs = [entry["lr"] for entry in train(config, tmp_path).history]
    base = TOY["lr"]
    assert lrs == pytest.approx([base, base, base / 2, base / 2, base / 4])
    tenth = RunConfig(**TOY, scheduler="step", step_size=3, step_factor=0.1, epochs=4)
    lrs = [entry["lr"] for entry in train(tenth, tmp_path).history]
    assert lrs == pytest.approx([base, base, base, base / 10])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scheduler": "step"}, "needs step_size"),
        ({"scheduler": "step", "step_size": 0}, "needs step_size"),
        ({"scheduler": "step", "step_size": 2, "step_factor": 1.5}, "step_factor must be"),
        ({"step_size": 10}, "read only with scheduler='step'"),
    ],
)
def test_the_step_scheduler_options_are_checked(changes, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**TOY, **changes)


def test_the_new_scheduler_fields_leave_older_run_ids_alone():
    """Ids computed by smto before the step scheduler existed (commit 1d33830)."""
    config = RunConfig(**TOY, epochs=3)
    assert config.run_id() == "toy_regression-T1_T2-unit_scal-seed0-cde51468e6"
    study = RunConfig(problem="multi_mnist", method="cagrad", lr=0.0025, dropout=0.3)
    assert study.run_id() == "multi_mnist-CL_RR-cagrad-seed0-aceef65fcd"
    stepped = RunConfig(**TOY, epochs=3, scheduler="step", step_size=2)
    assert stepped.run_id() != config.run_id()


@pytest.mark.parametrize("name", smto.available())
def test_every_method_trains_an_epoch_and_records_weights(tmp_path, name):
    record = train(RunConfig(**TOY, method=name, epochs=1), tmp_path)
    assert record.status == "completed"
    weights = record.history[0]["weights"]
    assert set(weights) == {"T1", "T2"} and all(math.isfinite(v) for v in weights.values())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "adamw"}, "unknown method 'adamw'"),
        ({"lr": -1.0}, "lr must be a number > 0"),
        ({"optimizer": "lamb"}, "unknown optimizer 'lamb'"),
        ({"optimizer": "per_task_adam", "method": "pcgrad"}, "needs a loss-based method"),
        ({"problem_options": {"size": 3}}, r"unknown problem option\(s\) \['size'\]"),
        ({"tasks": "T1_T3"}, r"unknown task\(s\) \['T3'\]"),
        ({"method": "cagrad", "method_params": {"alpha": "big"}}, "must be of type"),
        ({"epochs": 0}, "epochs must be an integer >= 1"),
    ],
)
def test_bad_configurations_are_clear_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**{**TOY, **changes})


def test_config_round_trip_and_stable_id():
    config = RunConfig(**TOY, method="Nash-MTL", method_params={"max_norm": 2.0})
    again = RunConfig.from_dict(config.to_dict())
    assert again == config and again.run_id() == config.run_id()
    assert config.run_id().startswith("toy_regression-T1_T2-nash_mtl-seed0-")
    assert RunConfig(**TOY, seed=1).run_id() != RunConfig(**TOY).run_id()
    with pytest.raises(ValueError, match="unknown run configuration key"):
        RunConfig.from_dict({**config.to_dict(), "learning_rate": 1})


def test_single_task_runs_keep_the_best_epoch_of_each_metric(tmp_path):
    config = RunConfig(**{**TOY, "tasks": "T2"}, method="unit_scal", epochs=4, scheduler="none")
    record = train(config, tmp_path)
    values = [e["val"]["T2"]["mse"] for e in record.history]
    best = min(range(4), key=values.__getitem__)
    assert record.best_by_metric["T2/mse"]["epoch"] == best
    assert record.best_by_metric["T2/mse"]["val"] == values[best]
    assert record.best_by_metric["T2/mse"]["test"] == record.history[best]["test"]["T2"]["mse"]
    multi = train(RunConfig(**TOY, method="unit_scal", epochs=2), tmp_path)
    assert multi.best_by_metric == {}


def test_a_pruned_run_ends_for_good(tmp_path):
    from smto.train import Pruned

    config = RunConfig(**TOY, method="unit_scal", epochs=4)

    def prune_after_two(record):
        if len(record.history) == 2:
            raise Pruned("below the median at epoch 1")

    record = train(config, tmp_path, on_epoch_end=prune_after_two)
    assert record.status == "pruned" and record.reason == "below the median at epoch 1"
    assert len(record.history) == 2 and record.best_epoch is not None
    again = train(config, tmp_path)  # not resumed
    assert again.status == "pruned" and len(again.history) == 2


def test_a_kill_between_checkpoint_and_record_loses_nothing(tmp_path):
    import json

    config = RunConfig(**TOY, method="famo", epochs=4)
    full = train(config, tmp_path / "full")

    def stop_after_two(record):
        if len(record.history) == 2:
            raise _Stop

    with pytest.raises(_Stop):
        train(config, tmp_path / "cut", on_epoch_end=stop_after_two)
    # Simulate a kill after the epoch-2 checkpoint but before its record.json was written.
    path = run_dir(config, tmp_path / "cut") / "record.json"
    stale = json.loads(path.read_text())
    stale["history"] = stale["history"][:1]
    path.write_text(json.dumps(stale))
    resumed = train(config, tmp_path / "cut")
    assert history_without_times(resumed) == history_without_times(full)
    assert resumed.best_epoch == full.best_epoch


def test_the_history_has_the_epoch_means_of_the_methods_diagnostics(tmp_path):
    problem = ToyRegression(sizes=(256, 64, 64))
    base = {"problem": "toy_regression", "tasks": "T1_T2", "epochs": 2, "batch_size": 64}
    rotograd = train(RunConfig(method="rotograd", **base), tmp_path, problem=problem)
    losses = [e["info"]["rotation_loss"] for e in rotograd.history]
    assert all(math.isfinite(v) and v > 0 for v in losses)
    nash = train(RunConfig(method="nash_mtl", **base), tmp_path, problem=problem)
    for entry in nash.history:
        assert entry["info"]["converged"] == 1.0  # 4 steps an epoch, each solved
        assert entry["info"]["solver_iterations"] >= 1
    unit = train(RunConfig(method="unit_scal", **base), tmp_path, problem=problem)
    assert all(e["info"] == {} for e in unit.history)
