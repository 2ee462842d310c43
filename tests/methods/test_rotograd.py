"""RotoGrad (Javaloy & Valera 2022): rotations of the representation trained to align the task
gradients, and the encoder update rescaled to a common norm."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import Tensor, nn

from smto.methods.rotograd import RotoGrad, haar_rotations, rotate
from smto.models.base import SharedEncoderModel

F64 = torch.float64


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: intra-op threads only add synchronization (10x slower on 2 busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mlp_model(n_tasks: int, width: int = 12, seed: int = 0) -> SharedEncoderModel:
    torch.manual_seed(seed)
    heads = {
        f"t{k}": nn.Sequential(nn.Linear(width, 8), nn.Tanh(), nn.Linear(8, 1))
        for k in range(n_tasks)
    }
    return SharedEncoderModel(nn.Sequential(nn.Linear(4, width), nn.Tanh()), heads)


def data(n_tasks: int, n: int = 32, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=dtype)
    return x, [torch.randn(n, 1, generator=g, dtype=dtype) * (k + 1) for k in range(n_tasks)]


def mse_losses(outputs: dict[str, Tensor], ys: list[Tensor]) -> Tensor:
    return torch.stack([((o - y) ** 2).mean() for o, y in zip(outputs.values(), ys)])


def double(method: RotoGrad) -> RotoGrad:
    """The method in float64 with a float64 random base (the default one is float32)."""
    method = method.double()
    if method.rotation_init == "haar":
        with torch.no_grad():
            method.base.copy_(haar_rotations(method.n_tasks, method.feature_size))
    return method


def reference_rotations(method: RotoGrad) -> Tensor:
    """R_k = B_k expm(A_k - A_k^T), A_k the strictly lower triangle (written out per task)."""
    mats = []
    for base, raw in zip(method.base, method.rotation_params):
        a = torch.tril(raw, diagonal=-1)
        mats.append(base @ torch.matrix_exp(a - a.T))
    return torch.stack(mats)


def test_head_inputs_rotate_the_first_features_and_keep_the_rest() -> None:
    method = double(RotoGrad(3, feature_size=5))
    rotations = method.rotations().detach()
    z = torch.randn(7, 8, dtype=F64)
    for k, zk in enumerate(method.head_inputs(z)):
        torch.testing.assert_close(zk[:, :5], z[:, :5] @ rotations[k].T)
        torch.testing.assert_close(zk[:, 5:], z[:, 5:])
    # a convolutional map: the first channels are rotated at every pixel
    fmap = torch.randn(2, 6, 3, 4, dtype=F64)
    for k, zk in enumerate(method.head_inputs(fmap)):
        pixels = fmap.permute(0, 2, 3, 1)  # (B, H, W, C)
        expected = torch.cat([pixels[..., :5] @ rotations[k].T, pixels[..., 5:]], dim=-1)
        torch.testing.assert_close(zk, expected.permute(0, 3, 1, 2))


def test_rotations_are_haar_or_identity_and_orthogonal() -> None:
    torch.manual_seed(3)
    haar = double(RotoGrad(4, feature_size=6))
    rot = haar.rotations().detach()
    eye = torch.eye(6, dtype=F64)
    torch.testing.assert_close(rot @ rot.transpose(-1, -2), eye.expand(4, 6, 6))
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(4, dtype=F64))
    assert (rot - eye).abs().amax() > 0.1  # random start, not the identity
    ident = RotoGrad(2, feature_size=6, rotation_init="identity")
    torch.testing.assert_close(ident.rotations().detach(), torch.eye(6).expand(2, 6, 6))


def test_rotations_stay_orthogonal_while_training() -> None:
    k = 3
    model = mlp_model(k)
    method = RotoGrad(k, feature_size=10, lr_relation=5.0)
    optimizer = torch.optim.Adam(
        [{"params": model.parameters(), "lr": 0.02}, *method.parameter_groups(0.02)]
    )
    assert optimizer.param_groups[1]["lr"] == pytest.approx(0.1)
    x, ys = data(k)
    for _ in range(25):
        optimizer.zero_grad()
        z, outputs = model(x, head_inputs=method.head_inputs)
        result = method.backward(mse_losses(outputs, ys), model.shared_parameters(), z)
        optimizer.step()
        assert result.weights.shape == (k,)
        assert torch.isfinite(result.weights).all()
    assert method.rotation_params.detach().abs().amax() > 1e-3  # the rotations did move
    rot = method.rotations().detach()
    err = (rot @ rot.transpose(-1, -2) - torch.eye(10)).abs().amax()
    assert err < 1e-5
    torch.testing.assert_close(rot, reference_rotations(method).detach())


def test_backward_matches_the_written_out_update() -> None:
    """Heads u -> sum(a_k * u) with loss mean_b t_kb head_k(u_b): h_k,b = t_kb a_k / B."""
    k, n, d, b = 3, 4, 6, 5
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, d, generator=g, dtype=F64, requires_grad=True)
    a = [torch.randn(d, generator=g, dtype=F64, requires_grad=True) for _ in range(k)]
    method = double(RotoGrad(k, feature_size=n, burn_in_period=5))
    with torch.no_grad():
        method.rotation_params.normal_(generator=g)
    rot = reference_rotations(method).detach()

    for step, scales in enumerate(([1.0, 2.0, 0.5], [0.3, 2.0, 4.0])):
        t = [torch.randn(b, generator=g, dtype=F64) * s for s in scales]
        x.grad = None
        method.rotation_params.grad = None
        for ak in a:
            ak.grad = None
        z = x * 1.0
        inputs = method.head_inputs(z)
        losses = torch.stack(
            [((zk * ak).sum(dim=1) * tk).mean() for zk, ak, tk in zip(inputs, a, t)]
        )
        result = method.backward(losses, features=z)

        h = torch.stack([tk[:, None] * ak.detach() / b for tk, ak in zip(t, a)])  # (K, B, D)
        g_task = h.clone()
        for j in range(k):
            g_task[j, :, :n] = h[j, :, :n] @ rot[j]  # R^T h, one row per sample
        norms = g_task.flatten(1).norm(dim=1)
        if step == 0:
            first = norms
            common = norms.mean()  # all ratios are 1: alpha = 1/K
        else:
            ratios = norms / first
            common = (ratios / ratios.sum() * norms).sum()
        weights = common / norms
        torch.testing.assert_close(result.weights, weights)
        torch.testing.assert_close(x.grad, torch.einsum("k,kbd->bd", weights, g_task))
        for zk, ak, tk in zip(inputs, a, t):  # heads: their own plain gradient
            torch.testing.assert_close(ak.grad, (tk[:, None] * zk.detach()).sum(0) / b)

        mean = g_task.mean(0)
        v = mean.norm() * (g_task / norms[:, None, None]).mean(0)
        raw = method.rotation_params.detach().clone().requires_grad_()
        low = torch.tril(raw, diagonal=-1)
        r = method.base @ torch.matrix_exp(low - low.transpose(-1, -2))
        loss = sum(((v[:, :n] @ r[j].T - h[j, :, :n]) ** 2).sum() / b for j in range(k))
        (expected_grad,) = torch.autograd.grad(loss, raw)
        torch.testing.assert_close(method.rotation_params.grad, expected_grad)
        tail = sum(((v[:, n:] - h[j, :, n:]) ** 2).sum() / b for j in range(k))
        assert result.info["rotation_loss"] == pytest.approx(
            float((loss + tail).detach()), rel=1e-10
        )


@pytest.mark.parametrize("conv", [False, True])
def test_encoder_gets_weighted_autograd_task_gradients(conv: bool) -> None:
    """Independent check through autograd: g_k = d L_k(head_k(R_k z)) / d z."""
    k = 2
    g = torch.Generator().manual_seed(1)
    if conv:
        x = torch.randn(3, 5, 2, 4, generator=g, dtype=F64, requires_grad=True)
        heads = [nn.Conv2d(5, 1, 1).double() for _ in range(k)]
        method = double(RotoGrad(k, feature_size=4))
    else:
        x = torch.randn(6, 5, generator=g, dtype=F64, requires_grad=True)
        heads = [
            nn.Sequential(nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 1)).double() for _ in range(k)
        ]
        method = double(RotoGrad(k, feature_size=5))
    targets = [torch.randn(1, generator=g, dtype=F64) for _ in range(k)]

    def task_loss(j: int, u: Tensor) -> Tensor:
        return ((heads[j](u) - targets[j]) ** 2).mean()

    rot = method.rotations().detach()
    expected = []
    for j in range(k):
        zz = x.detach().clone().requires_grad_()
        (gj,) = torch.autograd.grad(task_loss(j, rotate(zz, rot[j])), zz)
        expected.append(gj)
    z = x * 1.0
    inputs = method.head_inputs(z)
    losses = torch.stack([task_loss(j, inputs[j]) for j in range(k)])
    result = method.backward(losses, features=z)
    norms = torch.stack([e.norm() for e in expected])
    torch.testing.assert_close(result.weights, norms.mean() / norms)
    torch.testing.assert_close(x.grad, sum(w * e for w, e in zip(result.weights, expected)))


def test_single_task_is_plain_backpropagation_and_leaves_the_rotation_alone() -> None:
    """K = 1: v = g, so the rotation loss |R R^T h - h|^2 is 0, and the weight is 1."""
    model = mlp_model(1).double()
    twin = copy.deepcopy(model)
    method = double(RotoGrad(1, feature_size=12))
    x, ys = data(1, dtype=F64)
    z, outputs = model(x, head_inputs=method.head_inputs)
    result = method.backward(mse_losses(outputs, ys), features=z)
    _, outputs2 = twin(x, head_inputs=method.head_inputs)
    mse_losses(outputs2, ys).sum().backward()
    torch.testing.assert_close(result.weights, torch.ones(1, dtype=F64))
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    assert method.rotation_params.grad.abs().amax() < 1e-12
    assert result.info["rotation_loss"] < 1e-20


def test_rotate_only_sums_the_task_gradients() -> None:
    k = 3
    model = mlp_model(k).double()
    twin = copy.deepcopy(model)
    method = double(RotoGrad(k, feature_size=12, scale_gradients=False))
    x, ys = data(k, dtype=F64)
    z, outputs = model(x, head_inputs=method.head_inputs)
    result = method.backward(mse_losses(outputs, ys), features=z)
    _, outputs2 = twin(x, head_inputs=method.head_inputs)
    mse_losses(outputs2, ys).sum().backward()
    torch.testing.assert_close(result.weights, torch.ones(k, dtype=F64))
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


def alignment(method: RotoGrad, h: Tensor) -> float:
    """Mean over tasks of cos(g_k, mean_j unit(g_j)), g_k = R_k^T h_k (flattened)."""
    rot = method.rotations().detach()
    g = torch.stack([hk @ rk for hk, rk in zip(h, rot)]).flatten(1)
    units = g / g.norm(dim=1, keepdim=True)
    v = units.mean(0)
    return float((units @ v / v.norm()).mean())


def test_training_the_rotations_aligns_the_task_gradients() -> None:
    """With head gradients that do not depend on the rotation (linear heads, loss linear in
    their output, one sample weighting t for all tasks), rotations alone can align every
    g_k = R_k^T h_k with the mean direction: the rotation loss falls and cos -> 1."""
    k, n, b = 3, 6, 5
    g = torch.Generator().manual_seed(1)
    a = torch.randn(k, n, generator=g, dtype=F64) * torch.tensor([[1.0], [3.0], [0.5]], dtype=F64)
    t = torch.randn(b, generator=g, dtype=F64)
    x = torch.randn(b, n, generator=g, dtype=F64)
    h = torch.stack([t[:, None] * a[j] / b for j in range(k)])
    torch.manual_seed(0)
    method = double(RotoGrad(k, feature_size=n))
    optimizer = torch.optim.Adam(method.parameter_groups(0.05))
    before = alignment(method, h)
    history = []
    for _ in range(150):
        z = x.clone().requires_grad_() * 1.0
        losses = torch.stack(
            [((zj @ a[j]) * t).mean() for j, zj in enumerate(method.head_inputs(z))]
        )
        optimizer.zero_grad()
        history.append(method.backward(losses, features=z).info["rotation_loss"])
        optimizer.step()
    assert before < 0.9
    assert alignment(method, h) > 0.9999
    assert history[-1] < 0.5 * history[0]


def test_training_the_rotations_improves_alignment_on_an_mlp() -> None:
    """A frozen MLP on a fixed batch: the head gradients move with the rotations, so the
    alignment cannot reach 1, but training the rotations alone must still improve it."""
    k = 3
    model = mlp_model(k, width=8).double().requires_grad_(False)
    x, ys = data(k, n=64, dtype=F64)
    method = double(RotoGrad(k, feature_size=8))
    optimizer = torch.optim.Adam(method.parameter_groups(0.01))

    def forward() -> tuple[Tensor, list[Tensor], Tensor]:
        z = model.encoder(x).requires_grad_()
        inputs = method.head_inputs(z)
        outputs = {name: head(u) for (name, head), u in zip(model.heads.items(), inputs)}
        return z, inputs, mse_losses(outputs, ys)

    _, inputs, losses = forward()
    before = alignment(method, torch.stack(torch.autograd.grad(losses.sum(), inputs)))
    for _ in range(60):
        z, _, losses = forward()
        optimizer.zero_grad()
        method.backward(losses, features=z)
        optimizer.step()
    _, inputs, losses = forward()
    after = alignment(method, torch.stack(torch.autograd.grad(losses.sum(), inputs)))
    assert after > before + 0.02


def run_steps(method: RotoGrad, model: SharedEncoderModel, steps: int, seed: int):
    optimizer = torch.optim.SGD(
        [{"params": model.parameters(), "lr": 0.05}, *method.parameter_groups(0.05)]
    )
    results = []
    for s in range(steps):
        x, ys = data(method.n_tasks, seed=seed + s)
        optimizer.zero_grad()
        z, outputs = model(x, head_inputs=method.head_inputs)
        results.append(method.backward(mse_losses(outputs, ys), model.shared_parameters(), z))
        optimizer.step()
    return results


def test_state_round_trip() -> None:
    k = 3
    model = mlp_model(k)
    method = RotoGrad(k, feature_size=10, burn_in_period=2)
    run_steps(method, model, 3, seed=0)
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)  # a different random base: it must come from the state
    restored = RotoGrad(k, feature_size=10, burn_in_period=2)
    restored.load_state_dict(torch.load(buffer))
    assert restored.steps == 3
    model2 = copy.deepcopy(model)
    first = run_steps(method, model, 3, seed=10)
    second = run_steps(restored, model2, 3, seed=10)
    for r1, r2 in zip(first, second):
        assert torch.equal(r1.weights, r2.weights)
        assert r1.info == r2.info
    assert torch.equal(method.rotation_params, restored.rotation_params)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def test_errors() -> None:
    method = RotoGrad(2, feature_size=20)
    with pytest.raises(ValueError, match="feature_size=20"):
        method.head_inputs(torch.randn(4, 8))
    model = mlp_model(2)
    method = RotoGrad(2, feature_size=12)
    x, ys = data(2)
    z, outputs = model(x)  # heads not fed from method.head_inputs
    with pytest.raises(ValueError, match="head_inputs"):
        method.backward(mse_losses(outputs, ys), features=z)
    for kwargs in (
        {"feature_size": 0},
        {"feature_size": 2.5},
        {"lr_relation": 0.0},
        {"lr_relation": float("nan")},
        {"burn_in_period": -1},
        {"scale_gradients": 1},
        {"rotation_init": "eye"},
    ):
        name = next(iter(kwargs))
        with pytest.raises(ValueError, match=name):
            RotoGrad(2, **kwargs)
