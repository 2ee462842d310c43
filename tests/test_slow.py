"""Slow tests (run with ``./test.sh -m slow``): full-size models and real training runs."""

from __future__ import annotations

import math

import pytest
import torch

import smto
from smto.demo import make_data, make_model, task_losses, train
from smto.jacobian import GradientEngine

pytestmark = pytest.mark.slow


def test_batched_and_sequential_jacobians_agree_on_the_full_mpnn():
    pytest.importorskip("torch_geometric")
    from smto.models.mpnn import QM9_TARGETS, qm9_mpnn, random_molecules

    torch.manual_seed(0)
    model = qm9_mpnn()
    data = random_molecules(4, n_atoms=18)
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
def test_every_method_trains_the_demo_network(name):
    """Training reduces both held-out task losses well below those of the initial network."""
    x_test, y_test = make_data(1024, seed=2)
    torch.manual_seed(0)
    with torch.no_grad():
        initial = task_losses(make_model()(x_test)[1], y_test)
    result = train(name, steps=300)
    final = torch.tensor(result["test_losses"])
    assert all(math.isfinite(v) for v in result["weights"])
    assert (final < 0.7 * initial).all(), f"{name}: {initial.tolist()} -> {final.tolist()}"
