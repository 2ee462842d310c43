"""The hot path of an epoch: the engine adds nothing to a run's numbers beyond the step, it
evaluates test only where a best epoch needs it, and Multi-MNIST's batches are the indexed
samples wherever the data lives (issue 11, part 3)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import smto.train.engine as engine
from smto import registry
from smto.errors import ConfigError
from smto.method import RunContext
from smto.problems import MultiMNIST
from smto.problems.toy import ToyRegression
from smto.train import RunConfig, run_dir, train
from smto.train.checkpoint import load_checkpoint
from smto.train.evaluate import evaluate_split
from smto.train.records import CHECKPOINT
from smto.train.step import training_step

LIMITS = [512, 200, 200]


@pytest.fixture(scope="module")
def tiny_cl_rr() -> MultiMNIST:
    root = os.environ.get("SMTO_DATA")
    if not root or not (Path(root) / "mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("real MNIST not available: set SMTO_DATA to a directory holding mnist/")
    return MultiMNIST("CL_RR", data_dir=root, limits=LIMITS)


def plain_loop(problem: MultiMNIST, config: RunConfig):
    """The run written by hand around :func:`training_step`: seed, model, method, Adam,
    shuffled batches from a generator of the seed, ExponentialLR per epoch. Returns the
    per-epoch mean train losses and validation metrics, and the final weights."""
    torch.manual_seed(config.seed)
    model = problem.make_model(config.dropout)
    context = RunContext(problem.loss_types(), 50, config.lr, config.weight_decay)
    method = registry.create(config.method, problem.n_tasks, context=context)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.gamma)
    generator = torch.Generator().manual_seed(config.seed)
    shared = list(model.shared_parameters())
    losses, vals = [], []
    for _ in range(config.epochs):
        model.train()
        total, steps = torch.zeros(problem.n_tasks), 0
        for batch in problem.batches("train", config.batch_size, generator):
            step_losses, _ = training_step(
                model, method, optimizer, problem.losses, batch.inputs, batch.targets, shared
            )
            total += step_losses
            steps += 1
        losses.append(dict(zip(problem.tasks, (total / steps).tolist())))
        vals.append(evaluate_split(model, problem, "val", config.eval_batch_size, "cpu")[0])
        scheduler.step()
    return losses, vals, model.state_dict()


@pytest.mark.parametrize("method", ["unit_scal", "mgda"])
def test_an_engine_run_is_bitwise_a_plain_loop_of_training_steps(tiny_cl_rr, tmp_path, method):
    config = RunConfig(
        tasks="CL_RR", method=method, epochs=2, dropout=0.2, batch_size=128,
        problem_options={"limits": LIMITS},
    )  # fmt: skip
    record = train(config, tmp_path, problem=tiny_cl_rr)
    losses, vals, weights = plain_loop(tiny_cl_rr, config)
    assert [e["train_loss"] for e in record.history] == losses
    assert [e["val"] for e in record.history] == vals
    final = load_checkpoint(run_dir(config, tmp_path) / CHECKPOINT, config)["model"]
    assert final.keys() == weights.keys()
    for name, value in weights.items():
        assert torch.equal(final[name], value), name


def test_test_is_evaluated_only_at_an_improved_best_epoch(tmp_path, monkeypatch):
    calls: list[str] = []

    def counted(model, problem, split, *args, **kwargs):
        calls.append(split)
        return evaluate_split(model, problem, split, *args, **kwargs)

    monkeypatch.setattr(engine, "evaluate_split", counted)
    toy = {"problem": "toy_regression", "batch_size": 64, "scheduler": "none"}
    config = RunConfig(**toy, tasks="T1_T2", method="unit_scal", epochs=8, lr=0.3)
    record = train(config, tmp_path / "multi")
    tested = [e["epoch"] for e in record.history if e["test"] is not None]
    assert calls.count("val") == 8
    assert calls.count("test") == len(tested) < 8  # some epochs did not improve
    scores = [e["score"] for e in record.history]
    improved = [i for i in range(8) if all(scores[i] > s for s in scores[:i])]
    assert tested == improved
    calls.clear()
    single = train(RunConfig(**toy, tasks="T2", method="unit_scal", epochs=8, lr=0.3), tmp_path)
    tested = [e["epoch"] for e in single.history if e["test"] is not None]
    mse = [e["val"]["T2"]["mse"] for e in single.history]
    scores = [e["score"] for e in single.history]
    assert (
        tested
        == [  # the best epoch by score, or that of the metric (PROTOCOL.md)
            i
            for i in range(8)
            if all(mse[i] < v for v in mse[:i]) or all(scores[i] > s for s in scores[:i])
        ]
    )
    assert calls.count("test") == len(tested) < 8


def test_multi_mnist_batches_are_the_indexed_samples(tiny_cl_rr):
    problem = tiny_cl_rr
    inputs, targets = problem._inputs["train"], problem._targets["train"]
    order = torch.randperm(LIMITS[0], generator=torch.Generator().manual_seed(3))
    batches = list(problem.batches("train", 100, torch.Generator().manual_seed(3)))
    assert [b.size for b in batches] == [100] * 5 + [12]
    for batch, idx in zip(batches, torch.split(order, 100)):
        assert torch.equal(batch.inputs, inputs[idx])
        assert all(torch.equal(batch.targets[t], targets[t][idx]) for t in problem.tasks)
    val = list(problem.batches("val", 64))
    assert torch.equal(torch.cat([b.inputs for b in val]), problem._inputs["val"])
    assert val[0].inputs.data_ptr() == problem._inputs["val"].data_ptr()  # a view, no copy
    assert [b.size for b in val] == [64] * 3 + [8]
    for shuffle in (None, torch.Generator()):
        with pytest.raises(ConfigError, match="batch_size must be >= 1"):
            next(problem.batches("val", 0, shuffle))


def test_a_resident_problem_serves_the_same_batches_from_its_device(tiny_cl_rr):
    problem = tiny_cl_rr
    assert problem.resident("cpu") is problem
    on_meta = problem.resident("meta")  # any non-CPU device takes the moving path
    assert on_meta is not problem and problem.resident("meta") is on_meta
    assert on_meta.tasks == problem.tasks and on_meta.split_size("val") == LIMITS[1]
    here = list(problem.batches("train", 128, torch.Generator().manual_seed(0)))
    there = list(on_meta.batches("train", 128, torch.Generator().manual_seed(0)))
    assert [b.size for b in there] == [b.size for b in here]
    assert there[0].inputs.device.type == "meta" and there[0].inputs.shape == here[0].inputs.shape
    toy = ToyRegression("T1_T2")
    assert toy.resident("meta") is toy  # the default: the data stays where it is


def test_compile_is_part_of_the_id_only_when_on_and_refused_where_it_cannot_serve():
    toy = {"problem": "toy_regression", "tasks": "T1_T2"}
    plain = RunConfig(**toy, method="unit_scal")
    assert RunConfig(**toy, method="unit_scal", compile=False).run_id() == plain.run_id()
    assert RunConfig(**toy, method="unit_scal", compile=True).run_id() != plain.run_id()
    for changes, says in [
        ({"method": "mgda"}, "walking the autograd graph"),
        ({"method": "auto_lambda"}, "ValidationStep"),
        ({"method": "unit_scal", "optimizer": "per_task_adam"}, "per_task_adam optimizer"),
        ({"method": "unit_scal", "compile": "yes"}, "compile must be true, false or None"),
    ]:
        with pytest.raises(ConfigError, match=says):
            RunConfig(**{**toy, "compile": True, **changes})


@pytest.mark.slow
@pytest.mark.parametrize("method", ["unit_scal", "famo"])
def test_a_compiled_run_agrees_with_the_eager_one_to_float_tolerance(tiny_cl_rr, tmp_path, method):
    common = {"tasks": "CL_RR", "method": method, "epochs": 2, "batch_size": 128}
    options = {"problem_options": {"limits": LIMITS}}
    eager = train(RunConfig(**common, **options), tmp_path, problem=tiny_cl_rr)
    compiled = train(RunConfig(**common, **options, compile=True), tmp_path, problem=tiny_cl_rr)
    assert compiled.status == "completed"
    for a, b in zip(eager.history, compiled.history):
        for task in ("CL", "RR"):
            assert b["train_loss"][task] == pytest.approx(a["train_loss"][task], rel=1e-3)
            assert b["weights"][task] == pytest.approx(a["weights"][task], rel=1e-3)
            assert b["val_loss"][task] == pytest.approx(a["val_loss"][task], rel=1e-3)
