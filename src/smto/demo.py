"""A short demonstration: several methods train the same two-task regression network.

The two tasks share an encoder, conflict partly, and have losses on different scales (the
second is 100 times the first), which is where the methods differ. Each method trains the
same initial network on the same data; the table shows the final held-out loss per task and
the mean task weights each method reported over the last 50 steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from smto import registry
from smto.models.base import SharedEncoderModel

DEFAULT_METHODS = (
    "unit_scal",
    "uw_o",
    "mgda",
    "pcgrad",
    "cagrad",
    "imtl",
    "nash_mtl",
    "famo",
)


def make_data(n: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    direction = torch.linspace(-1.0, 1.0, 8)
    y1 = torch.sin(x @ direction)
    y2 = 10.0 * torch.tanh(x[:, :4].sum(1) - x @ direction)
    return x, torch.stack([y1, y2], dim=1)


def make_model() -> SharedEncoderModel:
    encoder = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 16), nn.Tanh())
    heads = {f"task{k + 1}": nn.Sequential(nn.Linear(16, 1), nn.Flatten(0)) for k in range(2)}
    return SharedEncoderModel(encoder, heads)


def task_losses(out: dict[str, Tensor], y: Tensor) -> Tensor:
    return torch.stack([((o - y[:, k]) ** 2).mean() for k, o in enumerate(out.values())])


def train(method_name: str, steps: int = 400, seed: int = 0) -> dict[str, object]:
    """Trains the demo network with one method; returns held-out losses and mean weights."""
    x, y = make_data(512, seed=1)
    x_test, y_test = make_data(1024, seed=2)
    torch.manual_seed(seed)
    model = make_model()
    method = registry.create(method_name, n_tasks=2)
    optimizer = torch.optim.Adam([*model.parameters(), *method.parameters()], lr=3e-3)
    recent: list[Tensor] = []
    for step in range(steps):
        batch = torch.randint(0, x.shape[0], (64,))
        optimizer.zero_grad()
        features, out = model(x[batch])
        result = method.backward(task_losses(out, y[batch]), model.shared_parameters(), features)
        optimizer.step()
        if method.needs_post_step:
            with torch.no_grad():
                method.post_step(task_losses(model(x[batch])[1], y[batch]))
        if step % 8 == 7:  # 8 batches of 64 make an epoch of the 512 training samples
            method.end_epoch()
        if step >= steps - 50:
            recent.append(result.weights)
    with torch.no_grad():
        test = task_losses(model(x_test)[1], y_test)
    return {
        "method": method.display_name,
        "test_losses": test.tolist(),
        "weights": torch.stack(recent).mean(0).tolist(),
    }


def main(methods: Sequence[str] = DEFAULT_METHODS, steps: int = 400) -> None:
    """Prints the comparison table."""
    print(__doc__.strip().splitlines()[0])
    print(f"{'method':<14} {'test loss 1':>12} {'test loss 2':>12} {'weights (last 50 steps)':>26}")
    for name in methods:
        row = train(name, steps=steps)
        l1, l2 = row["test_losses"]
        w = ", ".join(f"{v:.4f}" for v in row["weights"])
        print(f"{row['method']:<14} {l1:>12.4f} {l2:>12.4f} {'[' + w + ']':>26}")
