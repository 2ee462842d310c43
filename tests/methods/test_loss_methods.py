"""Properties shared by the loss-based methods SI, UW, UW-O, RLW, DWA and FAMO.

For a loss method the reported weights are d objective / d L_k, so the gradient it writes
into every model parameter must be sum_k weights[k] * grad L_k; and a method loaded from its
state dict must continue exactly like the original.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
import torch

from conftest import TinyMTL, tiny_batch, tiny_losses
from smto.capabilities import EpochEnd, PostStep
from smto.method import LossMethod, Scale
from smto.methods.dwa import DWA
from smto.methods.famo import FAMO
from smto.methods.rlw import RLW
from smto.methods.si import SI
from smto.methods.unit_scal import UnitScal
from smto.methods.uw import UW
from smto.methods.uw_o import UWO

K = 3

FACTORIES: dict[str, Callable[[], LossMethod]] = {
    "si": lambda: SI(K),
    "uw": lambda: UW(K, loss_types=("classification", "l1", "mse")),
    "uw_o": lambda: UWO(K),
    "rlw_normal": lambda: RLW(K, distribution="normal"),
    "rlw_dirichlet": lambda: RLW(K, distribution="dirichlet"),
    "dwa": lambda: DWA(K),
    "famo": lambda: FAMO(K),
}


def make_run(name: str, seed: int = 0):
    torch.manual_seed(seed)
    model = TinyMTL(n_tasks=K).double()
    method = FACTORIES[name]().double()
    optimizer = torch.optim.Adam([*model.parameters(), *method.parameters()], lr=0.05)
    return model, method, optimizer


def batch(step: int):
    x, ys = tiny_batch(K, seed=100 + step)
    return x.double(), [y.double() for y in ys]


def train_step(model, method, optimizer, step: int, check_gradients: bool = False):
    """One step of the documented loop; returns the reported weights."""
    x, ys = batch(step)
    z, losses = tiny_losses(model, x, ys)
    params = list(model.parameters())
    if check_gradients:
        jacobian = [torch.autograd.grad(losses[k], params, retain_graph=True) for k in range(K)]
    optimizer.zero_grad()
    result = method.backward(losses, model.encoder.parameters(), z)
    assert result.weights.shape == (K,)
    assert torch.isfinite(result.weights).all()
    if check_gradients:
        for i, p in enumerate(params):
            expected = sum(result.weights[k] * jacobian[k][i] for k in range(K))
            torch.testing.assert_close(p.grad, expected, rtol=1e-10, atol=1e-12)
    optimizer.step()
    if isinstance(method, PostStep):
        with torch.no_grad():
            _, new_losses = tiny_losses(model, x, ys)
        method.post_step(new_losses)
    if step % 2 == 1 and isinstance(method, EpochEnd):
        method.end_epoch()
    return result.weights


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_gradients_are_the_weighted_sum_of_task_gradients(name: str) -> None:
    model, method, optimizer = make_run(name)
    all_weights = [
        train_step(model, method, optimizer, step, check_gradients=True) for step in range(8)
    ]
    for weights in all_weights:
        if method.scale is Scale.MEAN:
            torch.testing.assert_close(weights.sum().item(), 1.0)
        elif method.scale is Scale.SUM:
            torch.testing.assert_close(weights.sum().item(), float(K))
    # the weights move for every method here (DWA from its third epoch, i.e. step 4)
    assert not torch.equal(all_weights[-1], all_weights[0])


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_weights_are_the_derivative_of_the_objective(name: str) -> None:
    method = FACTORIES[name]().double()
    for step in range(6):
        g = torch.Generator().manual_seed(step)
        losses = (torch.rand(K, generator=g, dtype=torch.float64) + 0.1).requires_grad_()
        result = method.backward(losses)
        torch.testing.assert_close(losses.grad, result.weights, rtol=1e-12, atol=1e-14)
        if isinstance(method, PostStep):
            method.post_step(losses.detach() * 0.9)
        if isinstance(method, EpochEnd):
            method.end_epoch()


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_state_dict_round_trip_continues_identically(name: str) -> None:
    model, method, optimizer = make_run(name)
    for step in range(5):
        train_step(model, method, optimizer, step)
    buffer = io.BytesIO()
    torch.save(
        {
            "model": model.state_dict(),
            "method": method.state_dict(),
            "optimizer": optimizer.state_dict(),
        },
        buffer,
    )
    rng = torch.get_rng_state()
    expected = [train_step(model, method, optimizer, step) for step in range(5, 11)]

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    model2, method2, optimizer2 = make_run(name, seed=1)
    model2.load_state_dict(saved["model"])
    method2.load_state_dict(saved["method"])
    optimizer2.load_state_dict(saved["optimizer"])
    torch.set_rng_state(rng)
    got = [train_step(model2, method2, optimizer2, step) for step in range(5, 11)]
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("factory", "rtol"),
    [
        (lambda: SI(2), 1e-9),
        (lambda: UWO(2, eps=0.0), 1e-9),
        # the default eps = 1e-8 changes the weights by a relative eps / L_k
        (lambda: UWO(2), 1e-5),
    ],
    ids=["si", "uw_o_exact", "uw_o_default_eps"],
)
@pytest.mark.parametrize("factor", [10.0, 0.1])
@pytest.mark.parametrize("task", [0, 1])
def test_scale_invariance_of_all_gradients(
    factory: Callable[[], LossMethod], rtol: float, factor: float, task: int
) -> None:
    """Elich et al., App. A1: multiplying a loss by a constant changes no gradient (SI, UW-O).

    Checked on every parameter of the model: the shared encoder and both heads.
    """

    def gradients(method: LossMethod, scale: torch.Tensor) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = TinyMTL(n_tasks=2).double()
        x, ys = tiny_batch(2)
        z, losses = tiny_losses(model, x.double(), [y.double() for y in ys])
        method.backward(losses * scale, model.encoder.parameters(), z)
        return [p.grad.clone() for p in model.parameters()]

    scale = torch.ones(2, dtype=torch.float64)
    scaled = scale.clone()
    scaled[task] = factor
    reference = gradients(factory(), scale)
    for a, b in zip(reference, gradients(factory(), scaled), strict=True):
        torch.testing.assert_close(b, a, rtol=rtol, atol=1e-14)
    # control: the plain mean of the losses is not invariant, so the comparison can fail
    plain = zip(gradients(UnitScal(2), scale), gradients(UnitScal(2), scaled), strict=True)
    assert not all(torch.allclose(a, b) for a, b in plain)


def test_si_weights_and_objective() -> None:
    losses = torch.tensor([0.5, 2.0, 8.0], dtype=torch.float64, requires_grad=True)
    terms, weights = SI(3).terms(losses)
    torch.testing.assert_close(terms.sum(), torch.log(losses.detach()).mean())
    torch.testing.assert_close(weights, 1.0 / (3 * losses.detach()))


def test_uw_o_weights_are_inverse_losses() -> None:
    losses = torch.tensor([0.5, 2.0, 8.0], dtype=torch.float64, requires_grad=True)
    result = UWO(3, eps=0.0).backward(losses)
    torch.testing.assert_close(result.weights, 1.0 / losses.detach())
    # K times the SI gradient
    losses2 = losses.detach().clone().requires_grad_()
    SI(3).backward(losses2)
    torch.testing.assert_close(losses.grad, 3 * losses2.grad)


def test_uw_o_guards_a_zero_loss() -> None:
    losses = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
    result = UWO(2).backward(losses)
    assert torch.isfinite(result.weights).all() and torch.isfinite(losses.grad).all()
    with pytest.raises(ValueError, match="eps"):
        UWO(2, eps=-1.0)


def test_scales_are_declared() -> None:
    assert SI.scale is UW.scale is UWO.scale is Scale.CUSTOM
    assert RLW.scale is DWA.scale is Scale.SUM
    assert FAMO.scale is Scale.MEAN
    assert UWO.display_name == "UW-O"
