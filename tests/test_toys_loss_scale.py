"""The loss-scale toy (Elich et al., App. A1 and A2): which updates a loss scale changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smto import registry
from smto.toys.loss_scale import SCALES, LossScaleNet, experiment, format_table, make_data, run


def _pair(method, optimizer, train_backbone, steps=10):
    return (
        run(method, optimizer, scaled=False, train_backbone=train_backbone, steps=steps),
        run(method, optimizer, scaled=True, train_backbone=train_backbone, steps=steps),
    )


def _assert_same_updates(unscaled, scaled, rtol):
    np.testing.assert_allclose(scaled.head_update, unscaled.head_update, rtol=rtol)
    np.testing.assert_allclose(scaled.backbone_update, unscaled.backbone_update, rtol=rtol)
    np.testing.assert_allclose(scaled.losses, unscaled.losses, rtol=rtol)


@pytest.mark.parametrize("train_backbone", [False, True])
def test_uw_o_updates_do_not_change_when_a_loss_is_scaled(train_backbone):
    unscaled, scaled = _pair("uw_o", "sgd", train_backbone)
    _assert_same_updates(unscaled, scaled, rtol=1e-10)
    np.testing.assert_allclose(scaled.head_grad, unscaled.head_grad, rtol=1e-10)


def test_per_task_adam_updates_do_not_change_when_a_loss_is_scaled():
    unscaled, scaled = _pair("unit_scal", "per_task_adam", True)
    assert unscaled.backbone_update.min() > 0  # the backbone is trained
    _assert_same_updates(unscaled, scaled, rtol=1e-7)


def test_ew_sgd_updates_scale_with_the_loss_scales():
    unscaled, scaled = _pair("unit_scal", "sgd", False)
    # frozen backbone, first step: head k's update is the scale times the unscaled one
    np.testing.assert_allclose(scaled.head_update[0] / unscaled.head_update[0], SCALES)
    assert np.abs(scaled.losses[-1] - unscaled.losses[-1]).min() > 1e-3
    trained_unscaled, trained_scaled = _pair("unit_scal", "sgd", True)
    ratio = trained_scaled.backbone_update / trained_unscaled.backbone_update
    assert np.abs(ratio - 1).max() > 1.0


def test_adam_is_invariant_in_the_heads_only():
    frozen = _pair("unit_scal", "adam", False)
    _assert_same_updates(*frozen, rtol=1e-7)
    unscaled, scaled = _pair("unit_scal", "adam", True, steps=20)
    assert np.abs(scaled.backbone_update / unscaled.backbone_update - 1).max() > 1e-2


def test_a_task_weight_under_sgd_is_that_heads_learning_rate():
    """Elich et al. A1.2: a weight c on task k's loss gives head k the update of lr * c."""
    x, y = make_data(64)
    lr, c, k = 0.01, 7.0, 0

    def heads_after(weights, head_lrs, steps=5):
        torch.manual_seed(0)
        model = LossScaleNet().double()
        method = registry.create("fixed", 2, weights=weights)
        groups = [{"params": h.parameters(), "lr": r} for h, r in zip(model.heads, head_lrs)]
        optimizer = torch.optim.SGD(groups, lr=lr)  # the backbone frozen: not optimized
        for _ in range(steps):
            optimizer.zero_grad()
            z, predictions = model(x)
            losses = torch.stack(
                [(p[:, 0] - y[:, i]).abs().mean() for i, p in enumerate(predictions)]
            )
            method.backward(losses, list(model.backbone.parameters()), z)
            optimizer.step()
        return [torch.cat([p.detach().ravel() for p in h.parameters()]) for h in model.heads]

    weighted = heads_after((c, 1.0), (lr, lr))
    faster = heads_after((1.0, 1.0), (lr * c, lr))
    plain = heads_after((1.0, 1.0), (lr, lr))
    torch.testing.assert_close(weighted[k], faster[k], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(weighted[1 - k], plain[1 - k], rtol=1e-12, atol=1e-14)
    assert (weighted[k] - plain[k]).abs().max() > 1e-3


def test_the_table_shows_each_run_unscaled_and_scaled():
    pairs = experiment(False, runs=(("unit_scal", "sgd"), ("uw_o", "sgd")), steps=3)
    table = format_table(pairs)
    assert table.count("EW + SGD") == 2 and table.count("UW-O + SGD") == 2
    assert "frozen" in table and "unscaled" in table
