"""Tests of SignSGD and PerTaskAdam, including the loss-scale invariances of Elich et al.
("Examining Common Paradigms in Multi-Task Learning", App. A1 and A2)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

import smto
from conftest import TinyMTL, tiny_batch, tiny_losses
from smto.methods.fixed import FixedWeights
from smto.optim import PerTaskAdam, SignSGD

SCALES = (10.0, 0.1)
STEPS = 4
LR = 1e-2
EPS = 1e-15  # eps breaks exact invariance: its effect is ~ lr * eps / |g|


def _model(n_tasks: int = 2) -> TinyMTL:
    torch.manual_seed(0)
    return TinyMTL(n_tasks=n_tasks).double()


def _batch(n_tasks: int = 2) -> tuple[Tensor, list[Tensor]]:
    x, ys = tiny_batch(n_tasks)
    return x.double(), [y.double() for y in ys]


def _heads(model: TinyMTL) -> list[Tensor]:
    return list(model.heads.parameters())


def _encoder(model: TinyMTL) -> list[Tensor]:
    return list(model.encoder.parameters())


def _train(
    make_optimizer: Callable[[TinyMTL], torch.optim.Optimizer],
    scales: tuple[float, float] | None,
    steps: int = STEPS,
    per_task_grads: bool = False,
) -> TinyMTL:
    """Trains TinyMTL with Unit. Scal. on losses multiplied by ``scales`` (None: unscaled)."""
    model = _model()
    x, ys = _batch()
    method = smto.create("unit_scal", 2)
    optimizer = make_optimizer(model)
    factor = torch.ones(2, dtype=torch.float64) if scales is None else torch.tensor(scales).double()
    for _ in range(steps):
        optimizer.zero_grad()
        z, losses = tiny_losses(model, x, ys)
        if per_task_grads:
            method.backward(losses * factor, _encoder(model), z, per_task_grads=True)
        else:
            method.backward(losses * factor, _encoder(model), z)
        optimizer.step()
    return model


def _max_diff(a: list[Tensor], b: list[Tensor]) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a, b, strict=True))


def _assert_same(a: list[Tensor], b: list[Tensor]) -> None:
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-11)


def _per_task_adam(model: TinyMTL) -> PerTaskAdam:
    return PerTaskAdam(
        [{"params": _encoder(model), "per_task": True}, {"params": _heads(model)}],
        n_tasks=2,
        lr=LR,
        eps=EPS,
    )


# --- Elich et al. App. A1: loss-scale invariances ---------------------------------------


def test_per_task_adam_invariant_on_all_parameters() -> None:
    plain = _train(_per_task_adam, None, per_task_grads=True)
    scaled = _train(_per_task_adam, SCALES, per_task_grads=True)
    assert _max_diff(_encoder(plain), _encoder(_model())) > 1e-3  # the encoder did move
    _assert_same(_encoder(plain), _encoder(scaled))
    _assert_same(_heads(plain), _heads(scaled))


def test_adam_invariant_on_heads_with_frozen_backbone() -> None:
    """A1.3, eq. (19): with the backbone fixed, Adam's head updates ignore loss scales."""

    def heads_only(model: TinyMTL) -> torch.optim.Optimizer:
        return torch.optim.Adam(_heads(model), lr=LR, eps=EPS)

    plain = _train(heads_only, None)
    scaled = _train(heads_only, SCALES)
    assert _max_diff(_heads(plain), _heads(_model())) > 1e-3
    _assert_same(_heads(plain), _heads(scaled))


def test_adam_not_invariant_on_shared_encoder() -> None:
    """A1.3, eqs. (20)-(21): the scales do not cancel in the backbone. The heads agree after
    the first step (eq. 19; afterwards they see different representations)."""

    def adam(model: TinyMTL) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=LR, eps=EPS)

    _assert_same(_heads(_train(adam, None, steps=1)), _heads(_train(adam, SCALES, steps=1)))
    plain = _train(adam, None)
    scaled = _train(adam, SCALES)
    assert _max_diff(_encoder(plain), _encoder(scaled)) > 1e-4


def test_sgd_not_invariant_on_heads() -> None:
    """A1.2: with SGD the loss weights act as per-task learning rates, even on the heads."""

    def sgd(model: TinyMTL) -> torch.optim.Optimizer:
        return torch.optim.SGD(_heads(model), lr=LR, momentum=0.9)

    plain = _train(sgd, None)
    scaled = _train(sgd, SCALES)
    assert _max_diff(_heads(plain), _heads(scaled)) > 1e-4


def test_sign_sgd_invariant_on_heads() -> None:
    def heads_only(model: TinyMTL) -> torch.optim.Optimizer:
        return SignSGD(_heads(model), lr=LR, momentum=0.9)

    plain = _train(heads_only, None)
    scaled = _train(heads_only, SCALES)
    assert _max_diff(_heads(plain), _heads(_model())) > 1e-3
    _assert_same(_heads(plain), _heads(scaled))

    def sign_sgd(model: TinyMTL) -> torch.optim.Optimizer:
        return SignSGD(model.parameters(), lr=LR, momentum=0.9)

    plain = _train(sign_sgd, None)
    scaled = _train(sign_sgd, SCALES)
    assert _max_diff(_encoder(plain), _encoder(scaled)) > 1e-4


# --- PerTaskAdam --------------------------------------------------------------------------


def _random_grads(shapes: list[tuple[int, ...]], n_steps: int, n_tasks: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [
        [torch.randn(n_tasks, *s, generator=g, dtype=torch.float64) for s in shapes]
        for _ in range(n_steps)
    ]


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_per_task_adam_with_one_task_is_torch_adam(weight_decay: float) -> None:
    """With K = 1, PerTaskAdam is Adam (AdamW with decoupled weight decay) bit for bit."""
    model = _model(n_tasks=1)
    reference = copy.deepcopy(model)
    x, ys = _batch(1)
    kwargs = dict(lr=3e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=weight_decay)
    optimizer = PerTaskAdam(
        [{"params": _encoder(model), "per_task": True}, {"params": _heads(model)}],
        n_tasks=1,
        **kwargs,
    )
    torch_cls = torch.optim.AdamW if weight_decay else torch.optim.Adam
    ref_optimizer = torch_cls(reference.parameters(), foreach=False, **kwargs)
    method = smto.create("unit_scal", 1)
    for _ in range(5):
        for m, opt in ((model, optimizer), (reference, ref_optimizer)):
            opt.zero_grad()
            z, losses = tiny_losses(m, x, ys)
            method.backward(losses, _encoder(m), z, per_task_grads=True)
            opt.step()
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q)
    assert _max_diff(list(model.parameters()), list(_model(1).parameters())) > 1e-2


def test_per_task_adam_is_sum_of_independent_adams() -> None:
    """AdaTask's update is the sum of the updates K independent Adams would make."""
    shapes = [(3, 2), (5,)]
    steps = _random_grads(shapes, n_steps=4, n_tasks=3)
    params = [torch.zeros(s, dtype=torch.float64) for s in shapes]
    optimizer = PerTaskAdam([{"params": params, "per_task": True}], n_tasks=3, lr=0.1)
    # Without weight decay each task's Adam trajectory depends on its gradients only, so
    # the parameters are the sum of the K independent Adam trajectories started at zero.
    trajectories = [[torch.zeros(s, dtype=torch.float64) for s in shapes] for _ in range(3)]
    references = [torch.optim.Adam(t, lr=0.1) for t in trajectories]
    for grads in steps:
        for p, g in zip(params, grads, strict=True):
            p.grad = g.sum(0)
            p.task_grads = g
        optimizer.step()
        for k, (t, ref) in enumerate(zip(trajectories, references, strict=True)):
            for q, g in zip(t, grads, strict=True):
                q.grad = g[k]
            ref.step()
    for i, p in enumerate(params):
        expected = sum(t[i] for t in trajectories)
        torch.testing.assert_close(p, expected, rtol=1e-12, atol=1e-14)


def test_per_task_adam_with_any_loss_method() -> None:
    """The per-task gradients are those of the method's terms (here fixed weights)."""
    model = _model()
    x, ys = _batch()
    method = FixedWeights(2, weights=(0.3, 0.7))
    optimizer = _per_task_adam(model)
    z, losses = tiny_losses(model, x, ys)
    expected = [
        torch.autograd.grad(w * losses[k], _encoder(model), retain_graph=True)
        for k, w in enumerate((0.3, 0.7))
    ]
    method.backward(losses, _encoder(model), z, per_task_grads=True)
    for i, p in enumerate(_encoder(model)):
        torch.testing.assert_close(p.task_grads, torch.stack([e[i] for e in expected]))
    optimizer.step()


def test_per_task_adam_missing_task_grads_is_an_error() -> None:
    model = _model()
    x, ys = _batch()
    optimizer = _per_task_adam(model)
    before = [p.clone() for p in model.parameters()]
    z, losses = tiny_losses(model, x, ys)
    smto.create("unit_scal", 2).backward(losses, _encoder(model), z)
    with pytest.raises(RuntimeError, match=r"per_task_grads=True"):
        optimizer.step()
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, q)  # nothing was updated


def test_per_task_adam_wrong_number_of_tasks_is_an_error() -> None:
    p = torch.zeros(3, requires_grad=True)
    optimizer = PerTaskAdam([{"params": [p], "per_task": True}], n_tasks=2)
    p.grad = torch.ones(3)
    p.task_grads = torch.ones(3, 3)
    with pytest.raises(RuntimeError, match="n_tasks=2"):
        optimizer.step()


def test_per_task_adam_drops_task_grads() -> None:
    model = _model()
    x, ys = _batch()
    optimizer = _per_task_adam(model)
    method = smto.create("unit_scal", 2)
    z, losses = tiny_losses(model, x, ys)
    method.backward(losses, _encoder(model), z, per_task_grads=True)
    assert all(hasattr(p, "task_grads") for p in _encoder(model))
    optimizer.step()
    assert not any(hasattr(p, "task_grads") for p in model.parameters())
    z, losses = tiny_losses(model, x, ys)
    method.backward(losses, _encoder(model), z, per_task_grads=True)
    optimizer.zero_grad()
    assert not any(hasattr(p, "task_grads") for p in model.parameters())


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n_tasks=0),
        dict(n_tasks=2, lr=-1.0),
        dict(n_tasks=2, betas=(0.9, 1.0)),
        dict(n_tasks=2, eps=-1e-8),
        dict(n_tasks=2, weight_decay=-0.1),
    ],
)
def test_per_task_adam_validates_hyperparameters(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        PerTaskAdam([torch.zeros(2, requires_grad=True)], **kwargs)


# --- SignSGD ------------------------------------------------------------------------------


def test_sign_sgd_two_steps_by_hand() -> None:
    """Signum with m_0 = 0, m <- 0.9 m + 0.1 g, p <- p - 0.1 sign(m).

    Step 1: m = (0.03, -0.02, 0), p = (1, -2, 0.5) - 0.1 (1, -1, 0) = (0.9, -1.9, 0.5).
    Step 2: m = 0.9 m + 0.1 (-1, 0.1, -0.5) = (-0.073, -0.008, -0.05),
    p = (0.9, -1.9, 0.5) + 0.1 (1, 1, 1) = (1.0, -1.8, 0.6). The first two coordinates tell
    this apart from plain signSGD (sign of g_2) and from a buffer started at g_1.
    """
    p = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    optimizer = SignSGD([p], lr=0.1, momentum=0.9)
    p.grad = torch.tensor([0.3, -0.2, 0.0], dtype=torch.float64)
    optimizer.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.9, -1.9, 0.5], dtype=torch.float64))
    p.grad = torch.tensor([-1.0, 0.1, -0.5], dtype=torch.float64)
    optimizer.step()
    torch.testing.assert_close(p.detach(), torch.tensor([1.0, -1.8, 0.6], dtype=torch.float64))
    torch.testing.assert_close(
        optimizer.state[p]["momentum_buffer"],
        torch.tensor([-0.073, -0.008, -0.05], dtype=torch.float64),
    )


def test_sign_sgd_weight_decay_by_hand() -> None:
    """p = 1, g = -0.2, lr = 0.1, weight_decay = 0.5.

    Decoupled: p <- (1 - 0.05) * 1 - 0.1 sign(-0.2) = 1.05.
    Coupled: g <- -0.2 + 0.5 = 0.3, p <- 1 - 0.1 sign(0.3) = 0.9.
    """
    for decoupled, expected in ((True, 1.05), (False, 0.9)):
        p = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
        optimizer = SignSGD(
            [p], lr=0.1, momentum=0.9, weight_decay=0.5, decoupled_weight_decay=decoupled
        )
        p.grad = torch.tensor([-0.2], dtype=torch.float64)
        optimizer.step()
        torch.testing.assert_close(p.detach(), torch.tensor([expected], dtype=torch.float64))


def test_sign_sgd_without_momentum_is_sign_of_gradient() -> None:
    p = torch.tensor([1.0, 1.0, 1.0], requires_grad=True)
    optimizer = SignSGD([p], lr=0.5, momentum=0.0)
    p.grad = torch.tensor([3.0, -1e-6, 0.0])
    optimizer.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.5, 1.5, 1.0]))
    assert "momentum_buffer" not in optimizer.state[p]


@pytest.mark.parametrize("kwargs", [dict(lr=-1.0), dict(momentum=1.0), dict(weight_decay=-1.0)])
def test_sign_sgd_validates_hyperparameters(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SignSGD([torch.zeros(2, requires_grad=True)], **kwargs)


# --- state_dict round trips ---------------------------------------------------------------


def _make_sign_sgd(model: TinyMTL) -> torch.optim.Optimizer:
    return SignSGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=0.01)


def _make_per_task_adam(model: TinyMTL) -> torch.optim.Optimizer:
    return PerTaskAdam(
        [{"params": _encoder(model), "per_task": True}, {"params": _heads(model)}],
        n_tasks=2,
        lr=LR,
        weight_decay=0.01,
    )


@pytest.mark.parametrize("make_optimizer", [_make_sign_sgd, _make_per_task_adam])
def test_state_dict_round_trip(make_optimizer: Callable[[TinyMTL], torch.optim.Optimizer]) -> None:
    x, ys = _batch()
    method = smto.create("unit_scal", 2)
    factor = torch.tensor(SCALES, dtype=torch.float64)

    def train(model: TinyMTL, optimizer: torch.optim.Optimizer, steps: int) -> None:
        for _ in range(steps):
            optimizer.zero_grad()
            z, losses = tiny_losses(model, x, ys)
            method.backward(losses * factor, _encoder(model), z, per_task_grads=True)
            optimizer.step()

    model = _model()
    optimizer = make_optimizer(model)
    train(model, optimizer, 3)
    saved_model = copy.deepcopy(model.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    train(model, optimizer, 3)

    resumed = TinyMTL().double()
    resumed.load_state_dict(saved_model)
    resumed_optimizer = make_optimizer(resumed)
    resumed_optimizer.load_state_dict(saved_optimizer)
    train(resumed, resumed_optimizer, 3)
    for p, q in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    if isinstance(optimizer, PerTaskAdam):
        assert resumed_optimizer.state[_encoder(resumed)[0]]["exp_avg"].shape[0] == 2
