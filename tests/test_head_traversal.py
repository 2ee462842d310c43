"""The hot path: each head is traversed by exactly one backward pass per step, for every
method, in both modes of the gradient engine, at K = 2 and K = 4."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import smto
from smto.capabilities import HeadTargets, head_inputs_of
from smto.jacobian import GradientEngine
from smto.models.base import SharedEncoderModel

SETTINGS = {"rotograd": {"feature_size": 6}}


def _model(n_tasks: int) -> SharedEncoderModel:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(5, 6), nn.Tanh())
    heads = {
        f"T{k}": nn.Sequential(nn.Linear(6, 7), nn.ReLU(), nn.Linear(7, 1)) for k in range(n_tasks)
    }
    return SharedEncoderModel(encoder, heads)


def _count_backward_passes(model: SharedEncoderModel) -> dict[str, int]:
    """Counts, per head, the backward passes that reach its output."""
    counts = dict.fromkeys(model.heads, 0)

    def hook_for(name: str):
        def hook(_module, _inputs, output):
            def count(grad):
                counts[name] += 1
                return grad

            output.register_hook(count)

        return hook

    for name, head in model.heads.items():
        head.register_forward_hook(hook_for(name))
    return counts


@pytest.mark.parametrize("mode", ["sequential", "batched"])
@pytest.mark.parametrize("n_tasks", [2, 4])
@pytest.mark.parametrize(
    "name",  # HeadTargets methods need one-layer heads and targets (BayesAgg-MTL's own tests)
    [n for n in smto.available() if not issubclass(smto.spec(n).cls, HeadTargets)],
)
def test_each_head_is_traversed_once_per_step(name: str, n_tasks: int, mode: str) -> None:
    model = _model(n_tasks)
    method = smto.create(name, n_tasks, **SETTINGS.get(name, {}))
    method.engine = GradientEngine(mode)
    counts = _count_backward_passes(model)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 5, generator=g)
    targets = torch.randn(n_tasks, 9, generator=g)
    for _ in range(2):
        model.zero_grad()
        z, out = model(x, head_inputs=head_inputs_of(method))
        losses = torch.stack(
            [((out[f"T{k}"].squeeze(-1) - targets[k]) ** 2).mean() for k in range(n_tasks)]
        )
        counts.update(dict.fromkeys(counts, 0))
        method.backward(losses, model.shared_parameters(), z)
        assert counts == dict.fromkeys(counts, 1)
        assert all(p.grad is not None for p in model.parameters())
