"""Descending the CAGrad toy with an smto method and an optimizer, and counting iterations.

Elich et al. (arXiv 2311.04698), Table 1 and Table A3: the iterations a method + optimizer
needs to reach the global minimum of the average loss from Liu et al.'s three starts. Every
step is the library's own: ``method.backward(losses, [x], z)`` of a registry method, then a
torch optimizer's step.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from smto import registry
from smto.capabilities import EpochEnd, HeadInputs, HeadTargets, PostStep, ValidationStep
from smto.errors import ConfigError, NonFiniteError
from smto.method import Scale
from smto.optim import SignSGD
from smto.toys.cagrad import STARTS, average_loss, minimum, task_losses

LEARNING_RATES = (10.0, 5.0, 1.0, 0.5, 0.1, 0.05, 0.01, 0.005, 0.001)
"""Elich et al.'s Table A3 learning rates (Table 1 is 10, 1, 0.1, 0.01 and 0.001)."""

PAPER_METHODS = ("unit_scal", "pcgrad", "cagrad")
"""The methods of Elich et al.'s Table 1 / A3 (EW, PCGrad, CAGrad)."""

OPTIMIZERS = ("gd", "adam", "signsgd")
"""Plain gradient descent (torch SGD without momentum), Adam (torch's defaults), signSGD."""

TOLERANCE = 0.1
"""Reached: the average loss is within this of its minimum (-15.0916). With it, EW + Adam
at lr 10, 5 and 1 takes 26, 37 and 22 iterations (the worst of the three starts), as in
Elich et al.'s Table A3."""

TOY_HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "mgda": {"normalization": "none"},
    "mgda_ub": {"normalization": "none"},
    "cagrad": {"alpha": 0.5},
}
"""The toy's settings of a few methods: Liu et al.'s MGDA takes the raw gradients (the
losses are negative here, so "loss+" is undefined), and their CAGrad uses c = 0.5."""

NEEDS_POSITIVE_LOSSES = {
    "si": "SI takes log L_k; the toy's losses are negative",
    "gls": "GLS takes the geometric mean of the losses; the toy's losses are negative",
    "famo": "FAMO takes log(L_k - L_min) with L_min = 0; the toy's losses are negative",
}
"""Methods the toy cannot run, and why (the capabilities below are found generically)."""


def unsuitable(name: str) -> str | None:
    """Why the registry method ``name`` cannot run on the toy, or None when it can.

    The toy is two parameters and two losses, with no heads and no batches: methods that
    need per-task head inputs (RotoGrad), a validation batch (Auto-Lambda), heads and targets
    (BayesAgg-MTL) or positive losses are left out.
    """
    canonical = registry.spec(name).name
    if canonical in NEEDS_POSITIVE_LOSSES:
        return NEEDS_POSITIVE_LOSSES[canonical]
    method = create_method(canonical)
    if isinstance(method, HeadInputs):
        return f"{method.display_name} transforms the inputs of the heads; the toy has none"
    if isinstance(method, ValidationStep):
        return f"{method.display_name} needs validation batches; the toy has no data"
    if isinstance(method, HeadTargets):
        return f"{method.display_name} needs linear heads and targets; the toy has neither"
    return None


def toy_methods() -> list[str]:
    """Every registry method that can run on the toy (see :func:`unsuitable`)."""
    return [name for name in registry.available() if unsuitable(name) is None]


def create_method(name: str, n_tasks: int = 2) -> torch.nn.Module:
    """The registry's method ``name`` with the toy's hyperparameters."""
    return registry.create(name, n_tasks, **TOY_HYPERPARAMETERS.get(registry.spec(name).name, {}))


def make_optimizer(name: str, params: Iterable[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """``gd`` (torch SGD, no momentum), ``adam`` (torch Adam) or ``signsgd`` (smto's
    :class:`~smto.optim.SignSGD`, momentum 0.9)."""
    if name == "gd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "signsgd":
        return SignSGD(params, lr=lr)
    raise ConfigError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


@dataclass(frozen=True)
class Trajectory:
    """One descent: the iterates, and when (if ever) the average loss came within tolerance
    of its minimum.

    ``status`` is ``reached``, ``budget`` (not within ``iterations``), ``stalled`` (x did
    not change for ``patience`` iterations: a fixed point of the float iteration away from
    the minimum), ``diverged`` (a non-finite loss or gradient) or ``failed: <error>`` (the
    method raised).
    """

    method: str
    optimizer: str
    lr: float
    start: tuple[float, float]
    points: np.ndarray
    reached_at: int | None
    status: str


def descend(
    method: str,
    optimizer: str,
    lr: float,
    start: Sequence[float],
    *,
    iterations: int = 100_000,
    tolerance: float = TOLERANCE,
    patience: int = 100,
    stop_when_reached: bool = True,
) -> Trajectory:
    """Runs ``method`` with ``optimizer`` at ``lr`` from ``start`` for at most ``iterations``.

    ``reached_at`` is the number of optimizer steps after which the average loss is first
    within ``tolerance`` of its minimum. The representation the methods see is x itself (an
    identity encoder, so methods that work on the features, IMTL-G, MGDA-UB, GradDrop, see
    the same gradients). Methods of the ``sum`` scale convention are divided by K, so every
    method's step is on the mean gradient's scale, as in Liu et al.'s toy code. Each
    iteration is an epoch for methods with per-epoch statistics (DWA).
    """
    if iterations < 0 or patience < 1 or not tolerance > 0:
        raise ConfigError("iterations must be >= 0, patience >= 1 and tolerance > 0")
    torch.manual_seed(0)
    model = create_method(method)
    x = torch.tensor([float(v) for v in start], requires_grad=True)
    opt = make_optimizer(optimizer, [x, *model.parameters()], lr)
    target = float(average_loss(torch.tensor(minimum(), dtype=torch.float64)))
    points = [x.detach().clone()]
    reached_at = None
    status = "budget"
    unchanged = 0
    for step in range(iterations + 1):
        opt.zero_grad()
        z = x.view_as(x)
        losses = task_losses(z)
        if reached_at is None and float(losses.detach().mean()) <= target + tolerance:
            reached_at = step
            if stop_when_reached:
                break
        if step == iterations:
            break
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.backward(losses, [x], z)
        except NonFiniteError:
            status = "diverged"
            break
        except (ValueError, TypeError, RuntimeError) as error:
            status = f"failed: {type(error).__name__}: {error}"
            break
        if model.scale is Scale.SUM:
            x.grad.div_(2)
        before = x.detach().clone()
        opt.step()
        if isinstance(model, PostStep):
            with torch.no_grad():
                model.post_step(task_losses(x))
        if isinstance(model, EpochEnd):
            model.end_epoch()
        if not torch.isfinite(x).all():
            status = "diverged"
            break
        points.append(x.detach().clone())
        unchanged = unchanged + 1 if torch.equal(before, x.detach()) else 0
        if unchanged >= patience:
            status = "stalled"
            break
    if reached_at is not None:
        status = "reached"
    return Trajectory(
        method=registry.spec(method).display_name,
        optimizer=optimizer,
        lr=float(lr),
        start=(float(start[0]), float(start[1])),
        points=torch.stack(points).numpy(),
        reached_at=reached_at,
        status=status,
    )


@dataclass(frozen=True)
class Cell:
    """One (method, optimizer, lr) of the table: its three trajectories."""

    trajectories: tuple[Trajectory, ...]

    @property
    def iterations(self) -> int | None:
        """The worst start's iterations to reach, or None when a start did not reach."""
        counts = [t.reached_at for t in self.trajectories]
        return None if any(c is None for c in counts) else max(counts)

    @property
    def reached(self) -> int:
        """How many starts reached the minimum."""
        return sum(t.reached_at is not None for t in self.trajectories)


def study(
    methods: Sequence[str] = PAPER_METHODS,
    optimizers: Sequence[str] = ("gd", "adam"),
    lrs: Sequence[float] = LEARNING_RATES,
    *,
    starts: Sequence[Sequence[float]] = STARTS,
    **descend_options: Any,
) -> dict[tuple[str, str, float], Cell]:
    """Every (method, optimizer, lr) from every start: ``{(method, optimizer, lr): Cell}``.

    A method that cannot run on the toy is a :class:`~smto.errors.ConfigError` naming why.
    """
    for name in methods:
        reason = unsuitable(name)
        if reason is not None:
            raise ConfigError(f"method {name!r} cannot run on the CAGrad toy: {reason}")
    return {
        (name, opt, float(lr)): Cell(
            tuple(descend(name, opt, lr, s, **descend_options) for s in starts)
        )
        for name in methods
        for opt in optimizers
        for lr in lrs
    }


def format_table(cells: dict[tuple[str, str, float], Cell]) -> str:
    """Elich et al.'s Table A3 layout: a row per optimizer and method, a column per lr; a
    cell is the worst start's iterations, ``-`` when a start did not reach (then the number
    of starts that reached, e.g. ``- (2/3)``)."""
    lrs = sorted({lr for _, _, lr in cells}, reverse=True)
    rows = sorted({(opt, name) for name, opt, _ in cells}, key=lambda r: (r[0], r[1]))
    header = ["optimizer", "method", *(f"{lr:g}" for lr in lrs)]
    lines = [header]
    for opt, name in rows:
        line = [opt, registry.spec(name).display_name]
        for lr in lrs:
            cell = cells.get((name, opt, lr))
            if cell is None:
                line.append("")
            elif cell.iterations is not None:
                line.append(f"{cell.iterations:,}")
            else:
                line.append(f"- ({cell.reached}/{len(cell.trajectories)})")
        lines.append(line)
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = [" | ".join(v.rjust(w) for v, w in zip(row, widths)) for row in lines]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(text)


def failures(cells: dict[tuple[str, str, float], Cell]) -> list[str]:
    """One line per trajectory that failed (the method raised), to report beside the table."""
    return [
        f"{t.method} + {t.optimizer} lr {t.lr:g} from {t.start}: {t.status[len('failed: ') :]}"
        for cell in cells.values()
        for t in cell.trajectories
        if t.status.startswith("failed")
    ]
