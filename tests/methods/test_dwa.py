"""Dynamic Weight Average (Liu et al. 2019): weights from the ratio of epoch-mean losses."""

from __future__ import annotations

import io
import math

import pytest
import torch

from smto.methods.dwa import DWA


def step(method: DWA, values: list[float]) -> torch.Tensor:
    losses = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    result = method.backward(losses)
    torch.testing.assert_close(losses.grad, result.weights)
    return result.weights


def hand_weights(previous: list[float], before: list[float], temperature: float) -> list[float]:
    exps = [math.exp(a / b / temperature) for a, b in zip(previous, before, strict=True)]
    return [len(exps) * e / sum(exps) for e in exps]


@pytest.mark.parametrize("temperature", [2.0, 0.5])
def test_weights_follow_the_epoch_mean_losses(temperature: float) -> None:
    method = DWA(2, temperature=temperature)
    epoch0 = [[2.0, 4.0], [4.0, 8.0]]  # mean [3, 6]
    epoch1 = [[3.0, 5.0], [1.0, 5.0]]  # mean [2, 5]
    epoch2 = [[1.0, 1.0], [1.5, 3.0], [0.5, 2.0]]  # mean [1, 2]
    for epoch in (epoch0, epoch1):
        for values in epoch:
            assert torch.equal(step(method, values), torch.ones(2, dtype=torch.float64))
        method.end_epoch()
    expected2 = torch.tensor(hand_weights([2, 5], [3, 6], temperature), dtype=torch.float64)
    for values in epoch2:
        torch.testing.assert_close(step(method, values), expected2)
    method.end_epoch()
    expected3 = torch.tensor(hand_weights([1, 2], [2, 5], temperature), dtype=torch.float64)
    torch.testing.assert_close(step(method, [7.0, 7.0]), expected3)
    torch.testing.assert_close(expected3.sum().item(), 2.0)
    assert not torch.allclose(expected2, expected3)


def test_state_round_trip_mid_epoch() -> None:
    g = torch.Generator().manual_seed(0)
    stream = (torch.rand(5, 3, 3, generator=g, dtype=torch.float64) + 0.2).tolist()
    method = DWA(3)
    for epoch in range(2):
        for values in stream[epoch]:
            step(method, values)
        method.end_epoch()
    step(method, stream[2][0])  # half way through the third epoch
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    copy = DWA(3)
    copy.load_state_dict(torch.load(buffer, weights_only=True))
    for m in (method, copy):
        for values in stream[2][1:]:
            step(m, values)
        m.end_epoch()
    for epoch in (3, 4):
        for values in stream[epoch]:
            assert torch.equal(step(method, values), step(copy, values))
        method.end_epoch()
        copy.end_epoch()
    assert len(copy.history) == 5
    # the epoch-3 weights use the third epoch's mean, which needs the restored running sums
    fresh = DWA(3)
    fresh.history = [h.clone() for h in method.history[:2]]
    for values in stream[2][1:]:
        step(fresh, values)
    fresh.end_epoch()
    assert not torch.allclose(fresh.history[-1], method.history[2])


def test_end_epoch_without_losses_warns() -> None:
    with pytest.warns(RuntimeWarning, match="no losses"):
        DWA(2).end_epoch()


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("inf")])
def test_invalid_temperature_is_a_clear_error(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        DWA(2, temperature=temperature)
