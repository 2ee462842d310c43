"""The per-task gradient engine: exactness of every strategy, leaf discovery, graph lifetime."""

from __future__ import annotations

import pytest
import torch

from conftest import TinyMTL, tiny_batch, tiny_losses
from smto.jacobian import GradientEngine, other_leaves
from smto.models.lenet import multi_lenet


def reference_jacobian(losses_fn, params):
    """K separate forward/backward passes: the textbook per-task gradients."""
    rows = []
    for k in range(losses_fn().shape[0]):
        grads = torch.autograd.grad(
            losses_fn()[k], params, allow_unused=True, materialize_grads=True
        )
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


def lenet_losses_fn(model, seed=0, batch=8):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, 28, 28, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (batch,), generator=g)
    r = torch.randn(batch, 28, 28, generator=g, dtype=torch.float64)

    def losses():
        _, out = model(x)
        return torch.stack(
            [torch.nn.functional.nll_loss(out["CL"], y), ((out["RR"] - r) ** 2).mean()]
        )

    return losses


def lenet_losses_and_features(model, seed=0, batch=8):
    """Like :func:`lenet_losses_fn`, but also returns the representation."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, 28, 28, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (batch,), generator=g)
    r = torch.randn(batch, 28, 28, generator=g, dtype=torch.float64)
    z, out = model(x)
    losses = torch.stack(
        [torch.nn.functional.nll_loss(out["CL"], y), ((out["RR"] - r) ** 2).mean()]
    )
    return z, losses


@pytest.mark.parametrize("through_heads", [False, True])
@pytest.mark.parametrize(
    ("mode", "chunk"), [("sequential", None), ("batched", None), ("batched", 1), ("auto", None)]
)
def test_every_strategy_gives_the_exact_jacobian_on_lenet(mode, chunk, through_heads):
    torch.manual_seed(0)
    model = multi_lenet(("CL", "RR")).double()
    losses_fn = lenet_losses_fn(model)
    shared = list(model.encoder.parameters())
    expected = reference_jacobian(losses_fn, shared)
    z, losses = lenet_losses_and_features(model)
    engine = GradientEngine(mode, chunk_size=chunk)
    grads = engine.task_gradients(losses, shared, z if through_heads else None)
    torch.testing.assert_close(grads.matrix, expected, rtol=1e-5, atol=1e-8)
    # Heads: each head's per-task gradient is that task's gradient, zero (or absent, when
    # each head is traversed once) for the other task.
    heads = dict(model.heads.named_parameters())
    assert {id(p) for p in grads.other_params} == {id(p) for p in heads.values()}
    for k, task in enumerate(("CL", "RR")):
        own = {id(p) for name, p in heads.items() if name.startswith(task)}
        expected_head = torch.autograd.grad(losses_fn()[k], list(heads.values()), allow_unused=True)
        by_id = {id(p): g for p, g in zip(heads.values(), expected_head)}
        for j, p in enumerate(grads.other_params):
            g = grads.other_grads[k][j]
            if id(p) in own:
                torch.testing.assert_close(g, by_id[id(p)])
            else:
                assert g is None or g.abs().max() == 0


def test_scales_multiply_each_task_gradient():
    torch.manual_seed(0)
    model = multi_lenet(("CL", "RR")).double()
    shared = list(model.encoder.parameters())
    scales = torch.tensor([0.5, -3.0], dtype=torch.float64)
    z, losses = lenet_losses_and_features(model)
    plain = GradientEngine("sequential").task_gradients(losses, shared, z, retain_graph=True)
    scaled = GradientEngine("sequential").task_gradients(losses, shared, z, scales=scales)
    torch.testing.assert_close(scaled.matrix, scales[:, None] * plain.matrix)


def test_a_loss_reaching_the_encoder_past_the_representation_falls_back():
    """A skip connection from the encoder's parameters into a head: the per-head route
    would miss it, so the engine takes the K products of the stacked losses."""
    torch.manual_seed(0)
    w = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    head = torch.randn(3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(4, 3, dtype=torch.float64)
    z = torch.tanh(x @ w)
    losses = torch.stack([(z @ head).pow(2).mean(), (z.sum() + w.sum()).pow(2)])
    grads = GradientEngine("sequential").task_gradients(losses, [w], z)
    expected = torch.stack(
        [
            torch.autograd.grad((torch.tanh(x @ w) @ head).pow(2).mean(), w)[0].reshape(-1),
            torch.autograd.grad((torch.tanh(x @ w).sum() + w.sum()).pow(2), w)[0].reshape(-1),
        ]
    )
    torch.testing.assert_close(grads.matrix, expected)


@pytest.mark.parametrize("implementation", ["fast", "pyg"])
def test_batched_and_sequential_agree_on_the_mpnn(implementation):
    """The fast dense MPNN needs no torch_geometric; vmap has a rule for each of its ops."""
    if implementation == "pyg":
        pytest.importorskip("torch_geometric")
    from smto.data.molecules import random_molecules
    from smto.models.mpnn import qm9_mpnn

    torch.manual_seed(0)
    model = qm9_mpnn(("mu", "alpha", "homo"), dim=16, implementation=implementation)
    data = random_molecules(4, (2, 7), seed=0)
    targets = torch.randn(4, 3)

    def losses():
        _, out = model(data)
        return torch.stack([((o - targets[:, i]) ** 2).mean() for i, o in enumerate(out.values())])

    shared = list(model.encoder.parameters())
    sequential = GradientEngine("sequential").task_gradients(losses(), shared).matrix
    batched = GradientEngine("batched").task_gradients(losses(), shared).matrix
    assert sequential.abs().max() > 0
    torch.testing.assert_close(batched, sequential, rtol=1e-5, atol=1e-6)


def test_other_leaves_stop_at_the_representation():
    model = TinyMTL(n_tasks=3)
    x, ys = tiny_batch(3)
    z, losses = tiny_losses(model, x, ys)
    heads = {id(p) for p in model.heads.parameters()}
    assert {id(p) for p in other_leaves(losses, exclude=[], boundary=z)} == heads
    everything = {id(p) for p in model.parameters()}
    assert {id(p) for p in other_leaves(losses, exclude=[])} == everything
    shared = list(model.encoder.parameters())
    assert {id(p) for p in other_leaves(losses, exclude=shared)} == heads


def test_representation_gradients_leave_the_encoder_graph_usable():
    model = TinyMTL(n_tasks=2)
    x, ys = tiny_batch(2)
    z, losses = tiny_losses(model, x, ys)
    expected = torch.autograd.grad(losses.sum(), z, retain_graph=True)[0]
    grads = GradientEngine("sequential").task_gradients(losses, [z], z)
    assert grads.matrix.shape == (2, z.numel())
    torch.testing.assert_close(grads.matrix.sum(0), expected.reshape(-1))
    z.backward(torch.ones_like(z))  # the encoder part of the graph is still there
    assert model.encoder[0].weight.grad is not None


@pytest.mark.parametrize("through_heads", [False, True])
@pytest.mark.parametrize("mode", ["sequential", "batched"])
def test_the_graph_is_freed_after_the_last_pass(mode, through_heads):
    model = TinyMTL(n_tasks=2)
    x, ys = tiny_batch(2)
    z, losses = tiny_losses(model, x, ys)
    features = z if through_heads else None
    GradientEngine(mode).task_gradients(losses, list(model.encoder.parameters()), features)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        losses.sum().backward()


def test_unused_inputs_get_zero_rows():
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(2, requires_grad=True)
    losses = torch.stack([(a**2).sum(), a.sum()])
    grads = GradientEngine("sequential").vjp(losses, [a, b], torch.eye(2))
    torch.testing.assert_close(grads[0], torch.stack([2 * a.detach(), torch.ones(3)]))
    torch.testing.assert_close(grads[1], torch.zeros(2, 2))


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="valid modes"):
        GradientEngine("fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_size"):
        GradientEngine("batched", chunk_size=0)
    with pytest.raises(ValueError, match="1-D tensor"):
        GradientEngine().task_gradients(torch.ones(2, 2, requires_grad=True), [])
    with pytest.raises(ValueError, match="do not require grad"):
        GradientEngine().task_gradients(torch.ones(2), [])


class _NoVmap(torch.autograd.Function):
    """Doubles its input; its backward reads a value out of the tensor (``.item()``), which
    vmap cannot batch, like some custom kernels."""

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, grad):
        return grad * (2.0 + 0.0 * grad.sum().item())


def test_auto_mode_falls_back_to_sequential_when_vmap_is_unsupported(monkeypatch):
    monkeypatch.setattr("smto.jacobian.prefers_sequential", lambda device: False)
    w = torch.randn(3, requires_grad=True)
    y = _NoVmap.apply(w)
    losses = torch.stack([y.sum(), (y**2).sum()])
    engine = GradientEngine("auto")
    with pytest.warns(RuntimeWarning, match="falling back to sequential"):
        grads = engine.task_gradients(losses, [w])
    assert engine.resolved_mode == "sequential"
    expected = torch.stack([torch.full((3,), 2.0), 8 * w.detach()])
    torch.testing.assert_close(grads.matrix, expected)


def test_auto_mode_uses_sequential_passes_on_the_cpu():
    model = TinyMTL(n_tasks=2)
    x, ys = tiny_batch(2)
    _, losses = tiny_losses(model, x, ys)
    engine = GradientEngine("auto")
    engine.task_gradients(losses, list(model.encoder.parameters()))
    assert engine.resolved_mode == "sequential"
