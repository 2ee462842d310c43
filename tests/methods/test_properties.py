"""One property suite for every aggregating method, over sampled gradient matrices.

The samplers (after torchjd's ``_matrix_samplers``): normal, strongly and weakly conflicting,
rank-deficient, with a zero row; each at scales from 1e-15 to 1e15. The properties: finite
output of the declared shapes, the declared scale convention, ``direction == weights @ G``,
permutation equivariance, and, where a method claims it, invariance of the weights under a
global rescaling of the gradients.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

import smto
from smto.method import GradientMethod, Scale
from smto.solvers import SolverWarning

F64 = torch.float64
AGGREGATING = [n for n in smto.available() if isinstance(smto.create(n, 2), GradientMethod)]
RANDOMIZED = {"pcgrad", "graddrop", "gradvac"}
"""Their random draws depend on the task order: no permutation equivariance per draw."""
PRIORITIZED = {"pcd"}
"""One task (``primary``) is the objective, the others constraints: the tasks are not
exchangeable. Permuting them together with ``primary`` permutes the weights (tested below)."""
LEAST_SQUARES_WEIGHTS = {"graddrop", "trimmed_mean"}
"""The update is not a fixed combination of the gradients; its weights are a projection
(GradDrop) or the mean per-coordinate weights (TrimmedMean)."""
SCALE_INVARIANT_WEIGHTS = {
    "mgda",
    "mgda_ub",
    "imtl_g",
    "imtl",
    "edm",
    "cdtt",
    "pcgrad",
    "aligned_mtl",
    "upgrad",
    "dualproj",
    "krum",
    "trimmed_mean",
    "config",
    "cr_mogm",
}
"""Weights that do not change when every gradient is multiplied by the same c > 0."""


def _normal(k: int, n: int, g: torch.Generator) -> Tensor:
    return torch.randn(k, n, generator=g, dtype=F64)


def _strongly_conflicting(k: int, n: int, g: torch.Generator) -> Tensor:
    base = torch.randn(n, generator=g, dtype=F64)
    signs = torch.tensor([(-1.0) ** i for i in range(k)], dtype=F64)
    return signs[:, None] * base + 0.05 * torch.randn(k, n, generator=g, dtype=F64)


def _weakly_conflicting(k: int, n: int, g: torch.Generator) -> Tensor:
    base = torch.randn(n, generator=g, dtype=F64)
    return base + 1.2 * base.norm() / n**0.5 * torch.randn(k, n, generator=g, dtype=F64)


def _rank_deficient(k: int, n: int, g: torch.Generator) -> Tensor:
    return torch.randn(k, 2, generator=g, dtype=F64) @ torch.randn(2, n, generator=g, dtype=F64)


def _zero_row(k: int, n: int, g: torch.Generator) -> Tensor:
    m = torch.randn(k, n, generator=g, dtype=F64)
    m[k // 2] = 0.0
    return m


def _agreeing(k: int, n: int, g: torch.Generator) -> Tensor:
    return torch.rand(k, n, generator=g, dtype=F64) + 0.1


SAMPLERS: dict[str, Callable[[int, int, torch.Generator], Tensor]] = {
    "normal": _normal,
    "strongly_conflicting": _strongly_conflicting,
    "weakly_conflicting": _weakly_conflicting,
    "rank_deficient": _rank_deficient,
    "zero_row": _zero_row,
}
SCALES = [1e-15, 1e-5, 1.0, 1e5, 1e15]
SHAPES = [(2, 7), (3, 11), (5, 13)]


def _matrices():
    for sampler in SAMPLERS:
        for scale in SCALES:
            for k, n in SHAPES:
                yield pytest.param(sampler, scale, k, n, id=f"{sampler}-{scale:g}-K{k}")


def _aggregate(name: str, matrix: Tensor, seed: int = 0):
    """A fresh method (no state from earlier calls) on ``matrix``; solver warnings allowed."""
    torch.manual_seed(seed)
    method = smto.create(name, matrix.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SolverWarning)
        return method, method.aggregate(matrix, torch.ones(matrix.shape[0], dtype=F64))


@pytest.mark.parametrize(("sampler", "scale", "k", "n"), list(_matrices()))
@pytest.mark.parametrize("name", AGGREGATING)
def test_finite_output_shapes_and_scale_convention(name, sampler, scale, k, n) -> None:
    matrix = scale * SAMPLERS[sampler](k, n, torch.Generator().manual_seed(k * n))
    method, agg = _aggregate(name, matrix)
    assert agg.direction.shape == (n,) and agg.weights.shape == (k,)
    assert torch.isfinite(agg.direction).all() and torch.isfinite(agg.weights).all()
    if method.scale is Scale.MEAN:
        assert float(agg.weights.sum()) == pytest.approx(1.0, abs=1e-9)
    if name not in LEAST_SQUARES_WEIGHTS:
        expected = agg.weights @ matrix
        tol = 1e-9 * float(matrix.abs().max()) * float(agg.weights.abs().sum() + 1)
        assert float((agg.direction - expected).abs().max()) <= tol


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", [n for n in AGGREGATING if smto.create(n, 2).scale is Scale.SUM])
def test_sum_methods_are_the_plain_sum_without_conflicts(name, scale) -> None:
    if name == "graddrop" and scale < 1.0:
        pytest.skip("GradDrop's purity epsilon (1e-7, the original's) is absolute")
    matrix = scale * _agreeing(3, 9, torch.Generator().manual_seed(0))
    _, agg = _aggregate(name, matrix)
    torch.testing.assert_close(agg.direction, matrix.sum(dim=0))
    torch.testing.assert_close(agg.weights, torch.ones(3, dtype=F64))


@pytest.mark.parametrize(("sampler", "scale", "k", "n"), list(_matrices()))
@pytest.mark.parametrize("name", [n for n in AGGREGATING if n not in RANDOMIZED | PRIORITIZED])
def test_permutation_equivariance(name, sampler, scale, k, n) -> None:
    if name == "cagrad" and scale < 1e-5:
        pytest.skip(
            "CAGrad's 1e-8 inside the square root (the original's) dominates |g_w|^2 for tiny "
            "gradients: the inner problem is then ill-conditioned and rounding picks the point"
        )
    matrix = scale * SAMPLERS[sampler](k, n, torch.Generator().manual_seed(k * n))
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(1))
    _, agg = _aggregate(name, matrix)
    _, permuted = _aggregate(name, matrix[perm])
    # Where the problem has several solutions (duplicated or affinely dependent gradients,
    # a zero gradient), the direction is what must agree.
    size = max(float(agg.direction.abs().max()), float(matrix.abs().max()))
    tol = 1e-7 * size
    assert float((permuted.direction - agg.direction).abs().max()) <= tol
    if sampler in ("normal", "weakly_conflicting", "strongly_conflicting"):
        torch.testing.assert_close(permuted.weights, agg.weights[perm], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(("sampler", "scale", "k", "n"), list(_matrices()))
@pytest.mark.parametrize("name", sorted(PRIORITIZED))
def test_permuting_the_tasks_with_the_primary_permutes_the_weights(
    name, sampler, scale, k, n
) -> None:
    matrix = scale * SAMPLERS[sampler](k, n, torch.Generator().manual_seed(k * n))
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(1))
    primary = k - 1  # moved by each of these permutations
    agg = smto.create(name, k, primary=primary).aggregate(matrix, torch.ones(k, dtype=F64))
    moved = int((perm == primary).nonzero())  # where it lands in the permuted order
    permuted = smto.create(name, k, primary=moved).aggregate(matrix[perm], torch.ones(k, dtype=F64))
    size = max(float(agg.direction.abs().max()), float(matrix.abs().max()))
    assert float((permuted.direction - agg.direction).abs().max()) <= 1e-7 * size
    if sampler in ("normal", "weakly_conflicting", "strongly_conflicting"):
        torch.testing.assert_close(permuted.weights, agg.weights[perm], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("factor", [1e-6, 1e-3, 1e3, 1e6])
@pytest.mark.parametrize("sampler", ["normal", "weakly_conflicting", "strongly_conflicting"])
@pytest.mark.parametrize("name", sorted(SCALE_INVARIANT_WEIGHTS))
def test_weights_invariant_under_a_global_rescaling(name, sampler, factor) -> None:
    matrix = SAMPLERS[sampler](3, 11, torch.Generator().manual_seed(3))
    _, agg = _aggregate(name, matrix)
    _, scaled = _aggregate(name, factor * matrix)
    torch.testing.assert_close(scaled.weights, agg.weights, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(scaled.direction, factor * agg.direction, rtol=1e-6, atol=0.0)


@pytest.mark.parametrize("factor", [1e-6, 1e3])
def test_nash_mtl_direction_is_invariant_under_a_global_rescaling(factor) -> None:
    """alpha scales as 1/c, so the (unclipped) update does not depend on the scale."""
    matrix = _normal(3, 11, torch.Generator().manual_seed(3))
    plain = smto.create("nash_mtl", 3, max_norm=0.0)
    scaled = smto.create("nash_mtl", 3, max_norm=0.0)
    ones = torch.ones(3, dtype=F64)
    a = plain.aggregate(matrix, ones)
    b = scaled.aggregate(factor * matrix, ones)
    torch.testing.assert_close(b.direction, a.direction, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(b.weights * factor, a.weights, rtol=1e-6, atol=1e-12)
