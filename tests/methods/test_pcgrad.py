"""PCGrad: closed forms, projection properties, a vector-space reference, torchjd."""

from __future__ import annotations

import pytest
import torch
from torchjd.aggregation import PCGrad as TorchJDPCGrad

from conftest import TinyMTL, tiny_batch, tiny_losses
from smto.method import Scale
from smto.methods.pcgrad import PCGrad, pcgrad_weights


def reference_pcgrad(matrix: torch.Tensor, orders: list[list[int]]) -> tuple[torch.Tensor, list]:
    """Yu et al.'s loop on the vectors themselves; also returns each projected gradient."""
    projected = []
    for i in range(matrix.shape[0]):
        g = matrix[i].clone()
        for j in orders[i]:
            if j == i:
                continue
            inner = g @ matrix[j]
            if inner < 0:
                g = g - inner / (matrix[j] @ matrix[j]) * matrix[j]
        projected.append(g)
    return torch.stack(projected).sum(dim=0), projected


def orders_for_seed(seed: int, k: int) -> list[list[int]]:
    """The orders PCGrad draws after ``torch.manual_seed(seed)`` (one randperm per task)."""
    torch.manual_seed(seed)
    return [torch.randperm(k).tolist() for _ in range(k)]


def test_two_tasks_closed_form_conflicting() -> None:
    g1 = [1.0, 0.0]
    g2 = [-1.0, 1.0]
    m = torch.tensor([g1, g2], dtype=torch.float64)
    agg = PCGrad(2).aggregate(m, torch.ones(2))
    # By hand: g1.g2 = -1, |g1|^2 = 1, |g2|^2 = 2.
    # g1' = g1 + (1/2) g2 = (0.5, 0.5); g2' = g2 + 1 g1 = (0, 1); sum = (0.5, 1.5).
    assert agg.direction.tolist() == pytest.approx([0.5, 1.5], abs=1e-15)
    assert agg.weights.tolist() == pytest.approx([2.0, 1.5], abs=1e-15)


def test_two_tasks_closed_form_general() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        g1, g2 = torch.randn(2, 5, dtype=torch.float64, generator=g)
        d = g1 @ g2
        agg = PCGrad(2).aggregate(torch.stack([g1, g2]), torch.ones(2))
        if d < 0:
            p1 = g1 - d / (g2 @ g2) * g2
            p2 = g2 - d / (g1 @ g1) * g1
            torch.testing.assert_close(agg.direction, p1 + p2)
            # The projected gradients do not conflict with the other's original: orthogonal.
            assert float(p1 @ g2) == pytest.approx(0.0, abs=1e-12)
            assert float(p2 @ g1) == pytest.approx(0.0, abs=1e-12)
            expected = torch.stack([1 - d / (g1 @ g1), 1 - d / (g2 @ g2)])
            torch.testing.assert_close(agg.weights, expected)
        else:  # no conflict: the plain sum
            torch.testing.assert_close(agg.direction, g1 + g2)
            assert agg.weights.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("seed", range(8))
def test_many_tasks_match_the_vector_reference(seed: int) -> None:
    """For K > 2 what holds: each projection step leaves g_i^PC orthogonal to the g_j it was
    projected off at that moment (a later step may reintroduce a conflict with it); hence the
    final g_i^PC does not conflict with the last task in its order, and |g_i^PC| <= |g_i|."""
    k = 3 + seed % 5
    g = torch.Generator().manual_seed(100 + seed)
    m = torch.randn(k, 6, dtype=torch.float64, generator=g)
    orders = orders_for_seed(seed, k)
    torch.manual_seed(seed)
    agg = PCGrad(k).aggregate(m, torch.ones(k))
    expected, projected = reference_pcgrad(m, orders)
    torch.testing.assert_close(agg.direction, expected)
    torch.testing.assert_close(agg.weights @ m, expected)
    for i in range(k):
        last = [j for j in orders[i] if j != i][-1]
        assert float(projected[i] @ m[last]) >= -1e-12
        assert float(projected[i].norm()) <= float(m[i].norm()) + 1e-12
    # The per-step property on the coefficient rows, checked one step at a time.
    gram = m @ m.T
    for i in range(k):
        others = [j for j in orders[i] if j != i]
        for steps in range(1, len(others) + 1):
            prefix = torch.tensor([[i, *others[:steps]]] * k)
            row = pcgrad_weights(gram, prefix)[i]
            j = others[steps - 1]
            before = pcgrad_weights(gram, torch.tensor([[i, *others[: steps - 1]]] * k))[i]
            if float(before @ gram[:, j]) < 0:
                assert float(row @ gram[:, j]) == pytest.approx(0.0, abs=1e-12)
            else:
                torch.testing.assert_close(row, before)


@pytest.mark.parametrize("seed", range(5))
def test_matches_torchjd_with_the_same_seed(seed: int) -> None:
    """torchjd draws one ``torch.randperm(K)`` per task on the CPU, as we do: with the same
    seed the two agree exactly (same convention: the sum of the projected gradients)."""
    k = 2 + seed
    m = torch.randn(k, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    ours = PCGrad(k).aggregate(m, torch.ones(k)).direction
    torch.manual_seed(seed)
    theirs = TorchJDPCGrad()(m)
    torch.testing.assert_close(ours, theirs)


def test_conventions_and_determinism() -> None:
    assert PCGrad.scale is Scale.SUM
    m = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(1)
    a = PCGrad(5).aggregate(m, torch.ones(5))
    torch.manual_seed(1)
    b = PCGrad(5).aggregate(m, torch.ones(5))
    assert torch.equal(a.direction, b.direction)
    # A zero gradient is never projected on (no division by zero).
    m[2] = 0
    out = PCGrad(5).aggregate(m, torch.ones(5))
    assert torch.isfinite(out.weights).all()


def test_runs_through_backward() -> None:
    torch.manual_seed(0)
    model = TinyMTL(3)
    x, ys = tiny_batch(3)
    method = PCGrad(3)
    for _ in range(2):
        model.zero_grad()
        z, losses = tiny_losses(model, x, ys)
        result = method.backward(losses, model.encoder.parameters(), z)
    assert result.weights.shape == (3,)
    restored = PCGrad(3)
    restored.load_state_dict(method.state_dict())
