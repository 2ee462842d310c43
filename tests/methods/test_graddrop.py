"""GradDrop: sign agreement, keep probabilities, the batch-marginalized mode, torchjd."""

from __future__ import annotations

import pytest
import torch
from torchjd.aggregation import GradDrop as TorchJDGradDrop

from conftest import TinyMTL, tiny_batch, tiny_losses
from smto.method import Scale, Space
from smto.methods.graddrop import GradDrop


def agreeing_matrix(k: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (1, n), generator=g).to(torch.float64) * 2 - 1
    return torch.rand(k, n, generator=g, dtype=torch.float64) * signs


def test_sign_agreement_gives_exactly_the_sum() -> None:
    for k in (1, 2, 5):
        m = agreeing_matrix(k, 40, k)
        torch.manual_seed(0)
        agg = GradDrop(k).aggregate(m, torch.ones(k))
        assert torch.equal(agg.direction, m.sum(dim=0))
        torch.testing.assert_close(agg.weights, torch.ones(k, dtype=m.dtype))


def test_keep_probability_is_the_sign_purity() -> None:
    """One coordinate with g_1 = 3, g_2 = -1: P = (1 + 2/4) / 2 = 0.75, so the kept update is
    +3 (positives) with probability 0.75 and -1 otherwise; with k = 2, P = 1."""
    n = 20000
    m = torch.tensor([[3.0], [-1.0]], dtype=torch.float64).expand(2, n).contiguous()
    torch.manual_seed(0)
    d = GradDrop(2, marginalize=False).aggregate(m, torch.ones(2)).direction
    fraction = float((d > 0).double().mean())
    assert fraction == pytest.approx(0.75, abs=0.015)
    # Rescaled to the norm of the summed gradient (2 per coordinate).
    assert float(d.norm()) == pytest.approx(2.0 * n**0.5, rel=1e-12)
    d = GradDrop(2, k=2.0).aggregate(m, torch.ones(2)).direction
    assert bool((d > 0).all())


def hand_graddrop(m: torch.Tensor, seed: int, leak: float) -> torch.Tensor:
    """GradDrop per coordinate, written out from the paper's Algorithm 1 and lingvo."""
    torch.manual_seed(seed)
    purity = 0.5 * (1 + m.sum(dim=0) / (m.abs().sum(dim=0) + 1e-7))
    u = torch.rand(purity.shape, dtype=m.dtype)
    keep = torch.where(u < purity, m > 0, m < 0).to(m.dtype)
    update = (m * (leak + (1 - leak) * keep)).sum(dim=0)
    return update * m.sum(dim=0).norm() / update.norm()


@pytest.mark.parametrize("leak", [0.0, 0.5, 1.0])
def test_matches_the_algorithm_written_out(leak: float) -> None:
    g = torch.Generator().manual_seed(4)
    m = torch.randn(3, 50, dtype=torch.float64, generator=g)
    torch.manual_seed(1)
    agg = GradDrop(3, leak=leak).aggregate(m, torch.ones(3))
    torch.testing.assert_close(agg.direction, hand_graddrop(m, 1, leak))
    if leak == 1.0:  # everything passes: the plain sum
        torch.testing.assert_close(agg.direction, m.sum(dim=0))


@pytest.mark.parametrize("seed", range(5))
def test_matches_torchjd_up_to_the_rescaling(seed: int) -> None:
    """torchjd's GradDrop draws one uniform per coordinate like us (same RNG use) and
    computes P without the 1e-7 nor the rescaling: with the same seed, ours is torchjd's
    output rescaled to the norm of the summed gradient."""
    k = 2 + seed
    m = torch.randn(k, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    ours = GradDrop(k).aggregate(m, torch.ones(k)).direction
    torch.manual_seed(seed)
    theirs = TorchJDGradDrop()(m)
    torch.testing.assert_close(ours, theirs * m.sum(dim=0).norm() / theirs.norm())


def test_seeded_determinism_and_randomness() -> None:
    m = torch.randn(3, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    method = GradDrop(3)
    torch.manual_seed(5)
    a = method.aggregate(m, torch.ones(3))
    torch.manual_seed(5)
    b = method.aggregate(m, torch.ones(3))
    assert torch.equal(a.direction, b.direction) and torch.equal(a.weights, b.weights)
    torch.manual_seed(6)
    c = method.aggregate(m, torch.ones(3))
    assert not torch.equal(a.direction, c.direction)


def test_reported_weights_are_least_squares_coefficients() -> None:
    m = torch.randn(3, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    agg = GradDrop(3).aggregate(m, torch.ones(3))
    residual = agg.direction - agg.weights @ m
    # Normal equations: the residual is orthogonal to every task gradient.
    torch.testing.assert_close(m @ residual, torch.zeros(3, dtype=m.dtype), atol=1e-10, rtol=0)


def test_marginalized_mode_on_the_representation() -> None:
    """Two tasks whose losses are L and 2L agree in sign everywhere (also after the input
    sign and the batch sum), so the encoder gets exactly the gradient of 3L."""
    torch.manual_seed(0)
    model = TinyMTL(2).double()
    x, ys = tiny_batch(2)
    x, y = x.double(), ys[0].double()
    method = GradDrop(2)
    assert method.space is Space.FEATURES and method.marginalize
    z, outs = model(x)
    loss = ((outs[0] - y) ** 2).mean()
    method.backward(torch.stack([loss, 2 * loss]), features=z)
    got = [p.grad.clone() for p in model.encoder.parameters()]
    model.zero_grad()
    z, outs = model(x)
    (3 * ((outs[0] - y) ** 2).mean()).backward()
    for a, b in zip(got, [p.grad for p in model.encoder.parameters()]):
        torch.testing.assert_close(a, b)


def test_marginalized_masks_whole_features() -> None:
    """One draw per feature: each task's gradient is kept or dropped for the whole batch."""
    torch.manual_seed(0)
    model = TinyMTL(2).double()
    x, ys = tiny_batch(2, n=32)
    x, ys = x.double(), [y.double() for y in ys]
    method = GradDrop(2)
    z, losses = tiny_losses(model, x, ys)
    grads = torch.stack(
        [torch.autograd.grad(loss, z, retain_graph=True)[0] for loss in losses]
    )  # (K, B, F)
    torch.manual_seed(3)
    method.backward(losses, features=z)
    got = [p.grad.clone() for p in model.encoder.parameters()]
    # Recompute by hand with per-feature masks and backpropagate through the encoder.
    sign = torch.sign(z.detach())
    signal = (grads * sign).sum(dim=1)  # (K, F)
    torch.manual_seed(3)
    purity = 0.5 * (1 + signal.sum(0) / (signal.abs().sum(0) + 1e-7))
    positive = torch.rand(purity.shape, dtype=z.dtype) < purity
    keep = (torch.where(positive, signal > 0, signal < 0) | (signal == 0)).unsqueeze(1)
    update = (grads * keep).sum(0)
    update = update * grads.sum(0).norm() / update.norm()
    model.zero_grad()
    z, _ = tiny_losses(model, x, ys)
    z.backward(update)
    for a, b in zip(got, [p.grad for p in model.encoder.parameters()]):
        torch.testing.assert_close(a, b)


def test_conventions_validation_and_state() -> None:
    assert GradDrop.scale is Scale.SUM and GradDrop.default_space is Space.FEATURES
    for kwargs in ({"k": 0.0}, {"k": float("inf")}, {"leak": 1.5}, {"leak": -0.1}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            GradDrop(2, **kwargs)
    with pytest.raises(ValueError, match="marginalize"):
        GradDrop(2, marginalize=1)
    torch.manual_seed(0)
    model = TinyMTL(3)
    x, ys = tiny_batch(3)
    method = GradDrop(3)
    for _ in range(2):
        model.zero_grad()
        z, losses = tiny_losses(model, x, ys)
        result = method.backward(losses, features=z)
    assert result.weights.shape == (3,)
    GradDrop(3).load_state_dict(method.state_dict())
