"""Slow tests (run with ``./test.sh -m slow``): full-size models and real training runs."""

from __future__ import annotations

import pytest
import torch

import smto
from smto.jacobian import GradientEngine
from smto.problems import ToyRegression
from smto.train import RunConfig, train

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("implementation", ["fast", "pyg"])
def test_batched_and_sequential_jacobians_agree_on_the_full_mpnn(implementation):
    if implementation == "pyg":
        pytest.importorskip("torch_geometric")
    from smto.data.molecules import random_molecules
    from smto.models.mpnn import QM9_TARGETS, qm9_mpnn

    torch.manual_seed(0)
    model = qm9_mpnn(implementation=implementation)
    data = random_molecules(4, (9, 27), seed=0)
    targets = torch.randn(4, len(QM9_TARGETS))

    def losses():
        _, out = model(data)
        return ((torch.stack(list(out.values()), 1) - targets) ** 2).mean(0)

    shared = list(model.encoder.parameters())
    sequential = GradientEngine("sequential").task_gradients(losses(), shared).matrix
    batched = GradientEngine("batched", chunk_size=4).task_gradients(losses(), shared).matrix
    assert sequential.shape == (11, sum(p.numel() for p in shared))
    torch.testing.assert_close(batched, sequential, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", smto.available())
def test_every_method_trains_the_toy_network(tmp_path, name):
    """Training reduces both held-out task losses well below those of the initial network."""
    problem = ToyRegression()
    torch.manual_seed(0)
    model = problem.make_model()
    with torch.no_grad():
        batch = next(problem.batches("test", problem.split_size("test")))
        initial = problem.losses(model(batch.inputs)[1], batch.targets)
    config = RunConfig(
        problem="toy_regression",
        tasks="T1_T2",
        method=name,
        batch_size=64,
        lr=3e-3,
        epochs=40,
        scheduler="none",
    )
    record = train(config, tmp_path, problem=problem)
    final = torch.tensor([record.best_test[t]["mse"] for t in problem.tasks])
    assert record.status == "completed"
    assert (final < 0.75 * initial).all(), f"{name}: {initial.tolist()} -> {final.tolist()}"
