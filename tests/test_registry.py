"""The registry, and every registered method through the common interface."""

from __future__ import annotations

import copy

import pytest
import torch

import smto
from conftest import TinyMTL, tiny_batch, tiny_losses
from smto.capabilities import EpochEnd, HeadTargets, PostStep, ValidationStep, head_inputs_of
from smto.method import Scale, Space

ALL_METHODS = smto.available()
LOOP_METHODS = [n for n in ALL_METHODS if not issubclass(smto.spec(n).cls, HeadTargets)]
"""The methods this file's plain loop serves (HeadTargets ones need a problem's heads and
targets: tests/methods/test_bayesagg_mtl.py)."""
TINY_SETTINGS = {"rotograd": {"feature_size": 8}}  # TinyMTL's representation has 8 features


def test_names_match_loosely_and_unknown_names_list_the_valid_ones():
    assert smto.spec("Unit. Scal.").name == "unit_scal"
    assert smto.spec("UNIT_SCAL").name == "unit_scal"
    assert smto.create("MGDA-UB", 2).display_name == "MGDA-UB"
    assert smto.create("mgda", 2).display_name == "MGDA"
    with pytest.raises(ValueError, match=r"unknown method 'adamw'; valid methods: .*unit_scal"):
        smto.create("adamw", 2)


def test_bad_hyperparameters_are_clear_errors():
    with pytest.raises(
        ValueError, match=r"unknown hyperparameter\(s\) \['weigths'\].*weights=None"
    ):
        smto.create("fixed", 2, weigths=(0.5, 0.5))
    with pytest.raises(ValueError, match="weights must have 2 entries"):
        smto.create("fixed", 2, weights=(1.0,))
    with pytest.raises(ValueError, match="must be finite and non-negative"):
        smto.create("fixed", 2, weights=(1.0, -1.0))


@pytest.mark.parametrize("name", ALL_METHODS)
def test_every_method_declares_its_conventions(name):
    method = smto.create(name, 3)
    assert isinstance(method.scale, Scale)
    assert isinstance(method.space, Space)
    assert method.display_name
    assert set(method.hyperparameters()) == set(smto.spec(name).hyperparameters)


def _step(model, method, optimizer, step: int, n_tasks: int):
    torch.manual_seed(1000 + step)
    x, ys = tiny_batch(n_tasks, seed=step)
    head_inputs = head_inputs_of(method)
    if isinstance(method, ValidationStep):

        def task_losses(batch):
            return tiny_losses(model, *batch, head_inputs)[1]

        validation = tiny_batch(n_tasks, seed=1000 + step)
        method.validation_step(task_losses, model, (x, ys), validation, lr=0.05)
    optimizer.zero_grad()
    z, losses = tiny_losses(model, x, ys, head_inputs)
    result = method.backward(losses, model.encoder.parameters(), z)
    grads = [p.grad.clone() for p in model.parameters()]  # None would raise: all written
    optimizer.step()
    if isinstance(method, PostStep):
        with torch.no_grad():
            method.post_step(tiny_losses(model, x, ys, head_inputs)[1])
    if step % 2 == 1 and isinstance(method, EpochEnd):
        method.end_epoch()
    return result, grads


@pytest.mark.parametrize("name", LOOP_METHODS)
def test_every_method_trains_reports_weights_and_round_trips_its_state(name):
    n_tasks = 3
    torch.manual_seed(0)
    model = TinyMTL(n_tasks=n_tasks)
    method = smto.create(name, n_tasks, **TINY_SETTINGS.get(name, {}))
    optimizer = torch.optim.SGD([*model.parameters(), *method.parameters()], lr=0.05)
    for step in range(5):
        result, grads = _step(model, method, optimizer, step, n_tasks)
        assert result.weights.shape == (n_tasks,)
        assert torch.isfinite(result.weights).all()
        assert all(torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads[:2]), "the encoder got no gradient"
        # Weighted heads (an option of MGDA and Nash-MTL) may get a weight 0.
        heads_with_gradient = sum(bool(g.abs().sum() > 0) for g in grads[2:])
        assert heads_with_gradient == len(grads) - 2 or (
            getattr(method, "heads", "sum") == "weighted" and heads_with_gradient > 0
        ), "a head got no gradient"

    saved = copy.deepcopy((model.state_dict(), method.state_dict(), optimizer.state_dict()))
    twin_model = TinyMTL(n_tasks=n_tasks)
    twin_method = smto.create(name, n_tasks, **TINY_SETTINGS.get(name, {}))
    twin_optimizer = torch.optim.SGD([*twin_model.parameters(), *twin_method.parameters()], lr=0.05)
    twin_model.load_state_dict(saved[0])
    twin_method.load_state_dict(saved[1])
    twin_optimizer.load_state_dict(saved[2])
    for step in range(5, 9):
        result, grads = _step(model, method, optimizer, step, n_tasks)
        twin_result, twin_grads = _step(twin_model, twin_method, twin_optimizer, step, n_tasks)
        torch.testing.assert_close(twin_result.weights, result.weights, rtol=0, atol=0)
        for a, b in zip(grads, twin_grads):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_run_context_supplies_derived_defaults_below_the_given_ones():
    context = smto.RunContext(
        loss_types=("l1", "mse"), representation_size=2048, lr=0.01, weight_decay=1e-4
    )
    assert smto.create("uw", 2, context=context).loss_types == ("l1", "mse")
    assert smto.create("rotograd", 2, context=context).feature_size == 512  # capped (study)
    small = smto.RunContext(representation_size=50)
    assert smto.create("rotograd", 2, context=small).feature_size == 50
    assert smto.create("auto_lambda", 2, context=context).weight_decay == 1e-4
    assert smto.create("imtl", 2, context=context).scales_lr == 0.01
    given = smto.create("uw", 2, context=context, loss_types=("mse", "mse"))
    assert given.loss_types == ("mse", "mse")
    assert smto.create("uw", 2).loss_types == ("classification", "classification")
