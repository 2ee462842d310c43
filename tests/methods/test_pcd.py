"""PCD: the closed form for two tasks (Corollary 4.6), the QP's constraints and KKT
conditions (Definition 4.1, Theorem 4.2), the fallbacks of Algorithm 1, the scale-free tau,
torchjd's PCD over steps on the property suite's matrices, an exact resume, Multi-MNIST."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import pytest
import torch
from test_properties import SAMPLERS, SCALES, SHAPES

import smto
from smto.errors import ConfigError
from smto.solvers import SolverWarning
from smto.train import RunConfig, load_run, run_dir, train

F64 = torch.float64


def _ones(k: int) -> torch.Tensor:
    return torch.ones(k, dtype=F64)


def _first_scales(matrix: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """s_i at the first step: the debiased average is this step's squared norm."""
    return 1.0 / (matrix.pow(2).sum(dim=1) + eps).sqrt()


def test_two_tasks_is_the_closed_form() -> None:
    """Corollary 4.6: mu = max(0, (tau ||g~2||^2 - g~1.g~2) / ||g~2||^2), then the norm of
    g1."""
    g1 = torch.tensor([3.0, 0.0], dtype=F64)
    g2 = torch.tensor([-1.0, 0.5], dtype=F64)  # conflicting: mu > 0
    matrix = torch.stack([g1, g2])
    s = _first_scales(matrix)
    n1, n2 = s[0] * g1, s[1] * g2
    mu = max(0.0, float((0.3 * n2 @ n2 - n1 @ n2) / (n2 @ n2)))
    assert mu > 0.0
    expected = n1 + mu * n2
    expected = expected * g1.norm() / expected.norm()
    agg = smto.create("pcd", 2, tau=0.3).aggregate(matrix, _ones(2))
    torch.testing.assert_close(agg.direction, expected, rtol=1e-12, atol=1e-14)
    assert agg.info["active_constraints"] == 1.0


def test_a_satisfied_constraint_leaves_the_primary_gradient() -> None:
    """Corollary 4.3: g~_1 meets every constraint, so the update is g_1 itself."""
    matrix = torch.tensor([[1.0, 0.2, 0.0], [0.5, 1.0, 0.1], [1.0, -0.3, 2.0]], dtype=F64)
    agg = smto.create("pcd", 3, tau=0.02).aggregate(matrix, _ones(3))
    torch.testing.assert_close(agg.weights, torch.tensor([1.0, 0.0, 0.0], dtype=F64))


def _normalized_solution(method, matrix: torch.Tensor, primary: int):
    """(d~, g~, mu) of a fresh method's first step, read back from its weights."""
    scales = _first_scales(matrix, method.eps)
    agg = method.aggregate(matrix, _ones(matrix.shape[0]))
    mu = agg.weights / scales / (agg.weights[primary] / scales[primary])
    normalized = scales[:, None] * matrix
    return mu @ normalized, normalized, mu, agg


@pytest.mark.parametrize("tau", [0.0, 0.02, 0.5])
@pytest.mark.parametrize("sampler", ["normal", "strongly_conflicting", "weakly_conflicting"])
@pytest.mark.parametrize(("k", "n"), SHAPES)
def test_the_direction_solves_the_priority_qp(sampler, k, n, tau) -> None:
    """Definition 4.1 and Theorem 4.2: each secondary gets its tau-share of normalized
    progress; d~ - g~_p is a non-negative combination of the secondaries whose multipliers
    vanish off the binding constraints (the KKT conditions, sufficient for this convex QP)."""
    primary = k - 1
    matrix = SAMPLERS[sampler](k, n, torch.Generator().manual_seed(k * n))
    d, g, mu, agg = _normalized_solution(
        smto.create("pcd", k, primary=primary, tau=tau), matrix, primary
    )
    assert agg.info["feasible"] == 1.0 and agg.info["converged"] == 1.0
    assert float(mu[primary]) == pytest.approx(1.0)
    secondary = [j for j in range(k) if j != primary]
    slack = g[secondary] @ d - tau * g[secondary].pow(2).sum(dim=1)
    assert float(slack.min()) >= -1e-10
    assert float(mu[secondary].min()) >= 0.0
    assert float((mu[secondary] * slack).abs().max()) <= 1e-10 * (1 + float(mu.abs().max()))
    torch.testing.assert_close(agg.direction.norm(), matrix[primary].norm())


def test_incompatible_constraints_are_dropped_for_the_primary_gradient() -> None:
    """Two opposite secondaries cannot both progress (tau > 0): Algorithm 1 follows g_1."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(5, generator=g, dtype=F64)
    matrix = torch.stack([torch.randn(5, generator=g, dtype=F64), base, -3.0 * base])
    agg = smto.create("pcd", 3).aggregate(matrix, _ones(3))
    assert agg.info["feasible"] == 0.0
    torch.testing.assert_close(agg.direction, matrix[0])
    relaxed = smto.create("pcd", 3, tau=0.0).aggregate(matrix, _ones(3))
    assert relaxed.info["feasible"] == 1.0  # at tau = 0 the direction 0 is always feasible


def test_which_task_is_primary_matters() -> None:
    """Why the property suite exempts PCD from permutation equivariance."""
    matrix = SAMPLERS["strongly_conflicting"](3, 11, torch.Generator().manual_seed(0))
    first = smto.create("pcd", 3, primary=0).aggregate(matrix, _ones(3))
    second = smto.create("pcd", 3, primary=1).aggregate(matrix, _ones(3))
    assert float((first.direction - second.direction).abs().max()) > 0.1
    torch.testing.assert_close(second.direction.norm(), matrix[1].norm())


def test_a_zero_primary_gradient_halts() -> None:
    matrix = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=F64)
    agg = smto.create("pcd", 2).aggregate(matrix, _ones(2))
    assert float(agg.direction.abs().max()) == 0.0


def test_tau_is_scale_free() -> None:
    """A secondary loss multiplied by a constant at every step changes nothing (eps = 0)."""
    g = torch.Generator().manual_seed(4)
    plain, scaled = smto.create("pcd", 3, eps=0.0), smto.create("pcd", 3, eps=0.0)
    factor = torch.tensor([1.0, 1e4, 1e-3], dtype=F64)[:, None]
    for _ in range(4):
        matrix = torch.randn(3, 8, generator=g, dtype=F64)
        a = plain.aggregate(matrix, _ones(3))
        b = scaled.aggregate(factor * matrix, _ones(3))
        torch.testing.assert_close(b.direction, a.direction, rtol=1e-10, atol=1e-12)


def test_the_moving_average_normalizes_by_the_history() -> None:
    """Definition 4.5 over two steps: v = beta v + (1 - beta) ||g||^2, debiased by 1 - beta^t."""
    beta, first, second = 0.5, 2.0, 6.0
    method = smto.create("pcd", 2, beta=beta, eps=0.0, tau=0.3)
    g1 = torch.tensor([1.0, 0.0], dtype=F64)
    method.aggregate(torch.stack([g1, torch.tensor([-first, 0.5], dtype=F64)]), _ones(2))
    g2 = torch.tensor([-second, 0.5], dtype=F64)
    agg = method.aggregate(torch.stack([g1, g2]), _ones(2))
    v2 = ((1 - beta) * beta * (first**2 + 0.25) + (1 - beta) * (second**2 + 0.25)) / (1 - beta**2)
    n2 = g2 / math.sqrt(v2)
    mu = (0.3 * n2 @ n2 - g1 @ n2) / (n2 @ n2)  # s_1 = 1: g1's norm was 1 at both steps
    expected = g1 + mu * n2
    torch.testing.assert_close(agg.direction, expected / expected.norm(), rtol=1e-12, atol=0.0)


def _matrices():
    for sampler in SAMPLERS:
        for scale in SCALES:
            for k, n in SHAPES:
                yield pytest.param(sampler, scale, k, n, id=f"{sampler}-{scale:g}-K{k}")


@pytest.mark.parametrize(("sampler", "scale", "k", "n"), list(_matrices()))
def test_matches_torchjd_over_steps(sampler, scale, k, n) -> None:
    """torchjd's PCD (first row primary, the same defaults) over three steps of its moving
    average; the conventions agree (output rescaled to ||g_1||, g_1 on incompatible
    constraints, zero on a zero primary gradient)."""
    from torchjd.aggregation import PCDWeighting

    theirs, ours = PCDWeighting(), smto.create("pcd", k)
    g = torch.Generator().manual_seed(k * n)
    for _ in range(3):
        matrix = scale * SAMPLERS[sampler](k, n, g)
        with warnings.catch_warnings():
            warnings.simplefilter("error", SolverWarning)
            agg = ours.aggregate(matrix, _ones(k))
        expected = theirs(matrix @ matrix.T) @ matrix
        size = float(matrix.abs().max())
        assert float((agg.direction - expected).abs().max()) <= 1e-9 * size


def test_the_bench_peer_is_torchjds_pcd_and_agrees() -> None:
    from smto.bench.peers import TorchjdPeer

    matrix = SAMPLERS["weakly_conflicting"](3, 9, torch.Generator().manual_seed(5))
    peer = TorchjdPeer(3, "pcd")
    assert peer.display_name == "torchjd PCD"
    ours = smto.create("pcd", 3).aggregate(matrix, _ones(3))
    torch.testing.assert_close(peer.aggregate(matrix, _ones(3)).direction, ours.direction)


def test_resumes_exactly() -> None:
    g = torch.Generator().manual_seed(2)
    matrices = [torch.randn(3, 7, generator=g, dtype=F64) for _ in range(4)]
    a = smto.create("pcd", 3, primary=1, beta=0.9)
    for m in matrices[:2]:
        a.aggregate(m, _ones(3))
    b = smto.create("pcd", 3, primary=1, beta=0.9)
    b.load_state_dict(a.state_dict())
    for m in matrices[2:]:
        torch.testing.assert_close(
            b.aggregate(m, _ones(3)).weights, a.aggregate(m, _ones(3)).weights, rtol=0, atol=0
        )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"primary": 2}, r"primary must be a task index in \[0, 1\]"),
        ({"primary": -1}, "primary must be a task index"),
        ({"tau": 1.5}, r"tau must be in \[0, 1\]"),
        ({"beta": 1.0}, r"beta must be in \[0, 1\)"),
        ({"eps": -1e-8}, "eps must be a non-negative number"),
    ],
)
def test_rejects_bad_hyperparameters(params, message) -> None:
    with pytest.raises(ConfigError, match=message):
        smto.create("pcd", 2, **params)


def _data_dir() -> Path:
    root = os.environ.get("SMTO_DATA")
    if not root or not (Path(root) / "mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("real MNIST not available: set SMTO_DATA to a directory holding mnist/")
    return Path(root)


def test_multi_mnist_resumes_bit_identically(tmp_path) -> None:
    """Two epochs of Multi-MNIST CL_RR, stopped after the first and resumed: the moving
    average and step count come back from the checkpoint."""
    from smto.problems import MultiMNIST

    problem = MultiMNIST("CL_RR", data_dir=_data_dir(), limits=(512, 200, 200))
    config = RunConfig(
        tasks="CL_RR", method="pcd", method_params={"primary": 1}, epochs=2, batch_size=128,
        problem_options={"limits": [512, 200, 200]},
    )  # fmt: skip
    full = train(config, tmp_path / "full", problem=problem)
    assert full.status == "completed"

    class Stop(Exception):
        pass

    def stop_after_one(record):
        if len(record.history) == 1:
            raise Stop

    with pytest.raises(Stop):
        train(config, tmp_path / "cut", problem=problem, on_epoch_end=stop_after_one)
    assert load_run(run_dir(config, tmp_path / "cut")).status == "failed"
    resumed = train(config, tmp_path / "cut", problem=problem)
    strip = lambda r: [  # noqa: E731
        {k: v for k, v in e.items() if k not in ("seconds", "train_seconds")} for e in r.history
    ]
    assert strip(resumed) == strip(full)
    assert resumed.best_test == full.best_test
