"""The main study's code where it differs from the clean default: each option reproduces it
on a hand case, and the defaults give the heads the plain sum of their task gradients."""

from __future__ import annotations

import pytest
import torch

import smto
from conftest import TinyMTL, tiny_batch, tiny_losses
from smto.methods import CDTT, IMTL, IMTLG, IMTLL, MGDA, NashMTL

F64 = torch.float64


def _head_grads_of(model: TinyMTL, objective) -> list[torch.Tensor]:
    model.zero_grad()
    objective().backward()
    return [p.grad.clone() for p in model.heads.parameters()]


def _double_batch(n_tasks: int):
    x, ys = tiny_batch(n_tasks)
    return x.double(), [y.double() for y in ys]


@pytest.mark.parametrize(("name", "system"), [("imtl_g", "paper"), ("imtl_g", "transposed")])
def test_imtl_g_hand_case_for_both_systems(name: str, system: str) -> None:
    g = torch.tensor([[1.0, 0, 0], [0, 2, 0], [1, 1, 1]], dtype=F64)
    agg = smto.create(name, 3, system=system).aggregate(g, torch.ones(3, dtype=F64))
    projections = (g / g.norm(dim=1, keepdim=True)) @ agg.direction
    if system == "paper":
        expected = torch.tensor([0.776, 0.388, -0.164], dtype=F64)
        torch.testing.assert_close(agg.weights, expected, atol=5e-4, rtol=0)
        torch.testing.assert_close(
            projections, torch.full((3,), 0.612, dtype=F64), atol=5e-4, rtol=0
        )
        assert float(projections.max() - projections.min()) < 1e-12
    else:  # the study's code: the transposed system, unequal projections
        expected = torch.tensor([0.5993, 0.2587, 0.1420], dtype=F64)
        torch.testing.assert_close(agg.weights, expected, atol=1e-4, rtol=0)
        assert float(projections.max() - projections.min()) > 0.2
    assert float(agg.weights.sum()) == pytest.approx(1.0)


def test_imtl_g_systems_agree_for_two_tasks() -> None:
    g = torch.tensor([[1.0, 0.3], [-0.2, 2.0]], dtype=F64)
    paper = IMTLG(2).aggregate(g, torch.ones(2, dtype=F64)).weights
    transposed = IMTLG(2, system="transposed").aggregate(g, torch.ones(2, dtype=F64)).weights
    torch.testing.assert_close(paper, transposed)


def test_mgda_normalized_update_is_the_min_norm_point_of_the_normalized_gradients() -> None:
    # l2 normalization: unit gradients e1, e2 give alpha = (1/2, 1/2).
    g = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64)
    losses = torch.ones(2, dtype=F64)
    raw = MGDA(2, normalization="l2").aggregate(g, losses)
    normalized = MGDA(2, normalization="l2", update="normalized").aggregate(g, losses)
    torch.testing.assert_close(raw.direction, torch.tensor([0.5, 1.0], dtype=F64))
    torch.testing.assert_close(normalized.direction, torch.tensor([0.5, 0.5], dtype=F64))
    torch.testing.assert_close(normalized.weights, torch.tensor([0.5, 0.25], dtype=F64))
    # "loss+": n_k = L_k |g_k|.
    losses = torch.tensor([2.0, 0.5], dtype=F64)
    study = MGDA(2, update="normalized").aggregate(g, losses)
    n = torch.tensor([2.0 * 1.0, 0.5 * 2.0], dtype=F64)
    alpha = MGDA(2).aggregate(g, losses).weights
    torch.testing.assert_close(study.direction, (alpha / n) @ g)


@pytest.mark.parametrize(("name", "space"), [("mgda", None), ("mgda_ub", None), ("nash_mtl", None)])
def test_default_heads_get_exactly_the_gradient_of_the_summed_losses(name, space) -> None:
    torch.manual_seed(0)
    model = TinyMTL(3).double()
    x, ys = _double_batch(3)
    expected = _head_grads_of(model, lambda: tiny_losses(model, x, ys)[1].sum())
    model.zero_grad()
    z, losses = tiny_losses(model, x, ys)
    smto.create(name, 3).backward(losses, model.encoder.parameters(), z)
    for p, e in zip(model.heads.parameters(), expected):
        torch.testing.assert_close(p.grad, e)


def test_nash_mtl_weighted_heads_get_the_unclipped_alpha_weighting() -> None:
    torch.manual_seed(0)
    model = TinyMTL(3).double()
    x, ys = _double_batch(3)
    method = NashMTL(3, heads="weighted")
    z, losses = tiny_losses(model, x, ys)
    result = method.backward(losses, model.encoder.parameters(), z)
    got = [p.grad.clone() for p in model.heads.parameters()]
    alpha = method.alpha.to(F64)
    assert float(result.weights.sum()) < float(alpha.sum())  # the shared update is clipped
    expected = _head_grads_of(model, lambda: (alpha * tiny_losses(model, x, ys)[1]).sum())
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def test_cdtt_skips_a_step_with_a_zero_task_gradient() -> None:
    method = CDTT(2, window=2)
    losses = torch.ones(2, dtype=F64)
    for scale in (1.0, 1.5, 2.0):
        method.aggregate(torch.tensor([[scale, 0.0], [0.0, 1.0]], dtype=F64), losses)
    window, steps, previous = method._norms.clone(), method._steps, method._previous.clone()
    agg = method.aggregate(torch.tensor([[0.0, 0.0], [0.0, 1.0]], dtype=F64), losses)
    assert agg.direction.abs().max() == 0 and agg.weights.abs().max() == 0
    assert agg.info["skipped"] == 1.0
    torch.testing.assert_close(method._norms, window)
    assert method._steps == steps
    torch.testing.assert_close(method._previous, previous)
    # The next regular step continues from the untouched window.
    after = method.aggregate(torch.tensor([[2.5, 0.0], [0.0, 1.0]], dtype=F64), losses)
    assert after.info["skipped"] == 0.0 and method._steps == steps + 1


@pytest.mark.parametrize("cls", [IMTLL, IMTL])
def test_imtl_l_scales_with_their_own_adam(cls) -> None:
    """The study's code: an Adam of their own at the initial learning rate, outside the
    model's optimizer (whose learning rate a scheduler decays)."""
    torch.manual_seed(0)
    model = TinyMTL(2).double()
    x, ys = _double_batch(2)
    method = cls(2, scales_optimizer="own", scales_lr=0.1).double()
    assert list(method.parameters()) == []
    z, losses = tiny_losses(model, x, ys)
    grad = losses.detach() - 1.0  # e^s L - 1 at s = 0
    method.backward(losses, model.encoder.parameters(), z)
    # Adam's first step moves each coordinate by lr against the sign of its gradient.
    torch.testing.assert_close(method.s.detach(), -0.1 * torch.sign(grad))
    # Its state round-trips: a twin loaded from the state takes the same second step.
    twin = cls(2, scales_optimizer="own", scales_lr=0.1).double()
    twin.load_state_dict(method.state_dict())
    for m in (method, twin):
        z, losses = tiny_losses(model, x, ys)
        m.backward(losses, model.encoder.parameters(), z)
    torch.testing.assert_close(twin.s, method.s)
    with pytest.raises(ValueError, match="scales_lr"):
        z, losses = tiny_losses(model, x, ys)
        cls(2, scales_optimizer="own").double().backward(losses, model.encoder.parameters(), z)


def test_imtl_l_scales_in_the_model_optimizer_by_default() -> None:
    method = IMTLL(2)
    assert [name for name, _ in method.named_parameters()] == ["s"]
    with pytest.raises(ValueError, match="scales_optimizer"):
        IMTLL(2, scales_optimizer="adam")
