"""Auto-Lambda (Liu et al. 2022): meta-learned weights from a virtual step and a
finite-difference Hessian-vector product."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

from smto.methods.auto_lambda import AutoLambda
from smto.models.base import SharedEncoderModel

F64 = torch.float64
Batch = tuple[Tensor, list[Tensor]]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: intra-op threads only add synchronization (10x slower on 2 busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(n_tasks: int, encoder: nn.Module | None = None, seed: int = 0) -> SharedEncoderModel:
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Linear(3, 5), nn.Tanh()) if encoder is None else encoder
    width = 5 if not isinstance(encoder, nn.Identity) else 3
    heads = {f"t{k}": nn.Linear(width, 1) for k in range(n_tasks)}
    return SharedEncoderModel(encoder, heads).double()


def make_batch(n_tasks: int, seed: int, n: int = 12) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=F64)
    return x, [torch.randn(n, 1, generator=g, dtype=F64) * (k + 1) for k in range(n_tasks)]


def losses_with(model: nn.Module, batch: Batch, params: dict[str, Tensor] | None = None) -> Tensor:
    x, ys = batch
    if params is None:
        _, outputs = model(x)
    else:
        _, outputs = functional_call(model, params, (x,))
    return torch.stack([((o - y) ** 2).mean() for o, y in zip(outputs.values(), ys)])


def task_losses_of(model: nn.Module):
    return lambda batch: losses_with(model, batch)


def exact_hypergradient(
    model: nn.Module, weights: Tensor, train: Batch, val: Batch, lr: float, wd: float = 0.0
) -> Tensor:
    """d/dw sum_k L_k^val(theta - lr (grad sum_k w_k L_k(theta) + wd theta)), by autograd
    through the virtual step (create_graph=True)."""
    w = weights.detach().clone().requires_grad_()
    names = [n for n, _ in model.named_parameters()]
    theta = [p.detach().clone().requires_grad_() for p in model.parameters()]
    train_loss = (w * losses_with(model, train, dict(zip(names, theta)))).sum()
    grads = torch.autograd.grad(train_loss, theta, create_graph=True)
    virtual = {n: t - lr * (g + wd * t) for n, t, g in zip(names, theta, grads)}
    val_loss = losses_with(model, val, virtual).sum()
    (hyper,) = torch.autograd.grad(val_loss, w)
    return hyper


@pytest.mark.parametrize(
    ("encoder", "wd", "rtol"),
    [
        (nn.Identity(), 0.0, 1e-9),  # losses quadratic in theta: central differences are exact
        (None, 0.0, 2e-4),
        (None, 0.05, 2e-4),
    ],
)
def test_hypergradient_matches_autograd_through_the_virtual_step(encoder, wd, rtol) -> None:
    k = 3
    model = make_model(k, encoder)
    method = AutoLambda(k, init_weight=0.3, weight_decay=wd).double()
    with torch.no_grad():
        method.meta_weights.copy_(torch.tensor([0.3, 0.7, 0.2]))
    train, val = make_batch(k, 1), make_batch(k, 2)
    lr = 0.05
    fd = method.hypergradient(task_losses_of(model), model, train, val, lr)
    exact = exact_hypergradient(model, method.meta_weights, train, val, lr, wd)
    assert exact.abs().min() > 1e-4  # a meaningful comparison
    torch.testing.assert_close(fd, exact, rtol=rtol, atol=0.0)


def test_model_parameters_and_grads_are_untouched() -> None:
    k = 2
    model = make_model(k)
    g = torch.Generator().manual_seed(5)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g, dtype=F64)
    before = [p.detach().clone() for p in model.parameters()]
    grads = [p.grad.clone() for p in model.parameters()]
    method = AutoLambda(k).double()
    for step in range(3):
        method.validation_step(
            task_losses_of(model), model, make_batch(k, step), make_batch(k, 10 + step), lr=0.1
        )
    for p, b, gr in zip(model.parameters(), before, grads):
        assert torch.equal(p, b)
        assert torch.equal(p.grad, gr)
    assert not torch.equal(method.meta_weights, torch.full((k,), 0.1, dtype=F64))


def bn_model(k: int) -> SharedEncoderModel:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh())
    return SharedEncoderModel(encoder, {f"t{j}": nn.Linear(5, 1) for j in range(k)}).double()


def test_buffers_restore_mode_leaves_every_buffer_alone() -> None:
    k = 2
    model = bn_model(k)
    before = {n: b.clone() for n, b in model.named_buffers()}
    method = AutoLambda(k, buffers="restore").double()
    method.validation_step(task_losses_of(model), model, make_batch(k, 0), make_batch(k, 1), 0.1)
    for name, buf in model.named_buffers():
        assert torch.equal(buf, before[name])


def test_buffers_original_mode_sees_the_three_training_batch_forwards() -> None:
    """As in the original: the training batch at theta, theta + eps d, theta - eps d update
    the running statistics; the validation forward at theta' (on the original's copy) does
    not."""
    k = 2
    model = bn_model(k)
    method = AutoLambda(k).double()
    train, val = make_batch(k, 0), make_batch(k, 1)
    bn = model.encoder[1]
    method.validation_step(task_losses_of(model), model, train, val, 0.1)
    assert int(bn.num_batches_tracked) == 3
    # the running mean is three momentum updates towards the training batch's means
    # (theta +- eps d hardly moves them: eps |d| = 0.01)
    twin = bn_model(k)
    for _ in range(3):
        losses_with(twin, train)
    torch.testing.assert_close(bn.running_mean, twin.encoder[1].running_mean, rtol=0, atol=1e-2)
    val_only = bn_model(k)
    losses_with(val_only, val)
    assert not torch.allclose(val_only.encoder[1].running_mean, twin.encoder[1].running_mean)


def test_weights_move_to_lower_the_validation_loss() -> None:
    k = 3
    model = make_model(k)
    train, val = make_batch(k, 3), make_batch(k, 4)
    lr = 0.05
    method = AutoLambda(k, lr_relation=0.1).double()
    old = method.meta_weights.clone()
    exact = exact_hypergradient(model, old, train, val, lr)
    method.validation_step(task_losses_of(model), model, train, val, lr)
    new = method.meta_weights.clone()
    # first Adam step: each weight moves by about lr_relation * lr against its hypergradient
    torch.testing.assert_close(new - old, -0.1 * lr * torch.sign(exact), rtol=1e-4, atol=0.0)

    def val_after_virtual_step(w: Tensor) -> float:
        names = [n for n, _ in model.named_parameters()]
        theta = [p.detach().clone().requires_grad_() for p in model.parameters()]
        grads = torch.autograd.grad(
            (w * losses_with(model, train, dict(zip(names, theta)))).sum(), theta
        )
        virtual = {n: t - lr * g for n, t, g in zip(names, theta, grads)}
        return float(losses_with(model, val, virtual).sum().detach())

    assert val_after_virtual_step(new) < val_after_virtual_step(old)


def test_meta_learning_rate_is_fixed_at_the_first_lr() -> None:
    k = 2
    model = make_model(k)
    method = AutoLambda(k, lr_relation=10.0).double()
    method.validation_step(task_losses_of(model), model, make_batch(k, 0), make_batch(k, 1), 0.01)
    method.validation_step(task_losses_of(model), model, make_batch(k, 2), make_batch(k, 3), 0.001)
    assert method.optimizer().param_groups[0]["lr"] == pytest.approx(0.1)


def test_terms_weight_the_losses_with_the_meta_weights() -> None:
    method = AutoLambda(3).double()
    with torch.no_grad():
        method.meta_weights.copy_(torch.tensor([0.5, -0.2, 1.5]))
    losses = torch.tensor([1.0, 2.0, 3.0], dtype=F64, requires_grad=True)
    result = method.backward(losses)
    torch.testing.assert_close(losses.grad, torch.tensor([0.5, -0.2, 1.5], dtype=F64))
    torch.testing.assert_close(result.weights, torch.tensor([0.5, -0.2, 1.5], dtype=F64))
    assert method.meta_weights.grad is None


def test_state_round_trip() -> None:
    k = 3
    model = make_model(k)
    method = AutoLambda(k, lr_relation=1.0).double()
    for step in range(3):
        method.validation_step(
            task_losses_of(model), model, make_batch(k, step), make_batch(k, 20 + step), 0.05
        )
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    restored = AutoLambda(k, lr_relation=1.0).double()
    restored.load_state_dict(torch.load(buffer))
    model2 = copy.deepcopy(model)
    for step in range(3, 6):
        train, val = make_batch(k, step), make_batch(k, 20 + step)
        method.validation_step(task_losses_of(model), model, train, val, 0.05)
        restored.validation_step(task_losses_of(model2), model2, train, val, 0.05)
        assert torch.equal(method.meta_weights, restored.meta_weights)


def test_errors() -> None:
    for kwargs in (
        {"init_weight": 0.0},
        {"init_weight": float("inf")},
        {"lr_relation": -1.0},
        {"weight_decay": -0.1},
        {"buffers": "keep"},
    ):
        name = next(iter(kwargs))
        with pytest.raises(ValueError, match=name):
            AutoLambda(2, **kwargs)
    model = make_model(2)
    with pytest.raises(ValueError, match="shape"):
        AutoLambda(3).validation_step(
            task_losses_of(model), model, make_batch(2, 0), make_batch(2, 1), 0.1
        )
    train, val = make_batch(2, 0), make_batch(2, 1)

    def failing_on_validation(batch: Batch) -> Tensor:
        if batch is val:
            raise RuntimeError("validation forward failed")
        return losses_with(model, batch)

    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="validation forward failed"):
        AutoLambda(2).validation_step(failing_on_validation, model, train, val, 0.5)
    for p, b in zip(model.parameters(), before):  # restored after the virtual step
        assert torch.equal(p, b)
