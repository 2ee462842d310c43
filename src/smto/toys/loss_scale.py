"""The loss-scale toy: which method + optimizer updates do not change when a loss is scaled.

Elich et al. (arXiv 2311.04698), App. A1 (the invariances) and App. A2 (this experiment,
Fig. A1 with the backbone frozen, Fig. A2 with it trained). Scalar inputs x ~ U(0, 1), two
regression targets that are scalings of x, a shared backbone of two layers (20 units,
LeakyReLU) and two heads of two layers, L1 losses; in the scaled setting task 1's loss is
multiplied by 10 and task 2's by 0.1 (depth in cm and in m instead of dm). The paper does
not give the target factors, the learning rate or the number of samples: the choices here
are :data:`TARGET_FACTORS`, one learning rate for every run (3e-3: at 1e-2 UW-O + SGD,
whose gradients grow as 1 / L_k, is chaotic and amplifies rounding), 256 samples and
full-batch steps (100, the paper's epochs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from smto import registry
from smto.errors import ConfigError
from smto.optim import PerTaskAdam

SCALES = (10.0, 0.1)
"""The loss scales of the scaled setting (task 1 x10, task 2 x0.1)."""

TARGET_FACTORS = (2.0, 0.5)
"""The targets are ``factor * x``, one factor per task (the paper does not give them)."""

RUNS: tuple[tuple[str, str], ...] = (
    ("unit_scal", "sgd"),
    ("unit_scal", "adam"),
    ("uw_o", "sgd"),
    ("unit_scal", "per_task_adam"),
)
"""App. A2's (method, optimizer) pairs: EW + SGD, EW + Adam, UW-O + SGD, EW + per-task Adam."""

OPTIMIZERS = ("sgd", "adam", "per_task_adam")

METHOD_HYPERPARAMETERS: dict[str, dict[str, float]] = {"uw_o": {"eps": 0.0}}
"""UW-O's guard against a zero loss would change its weights by eps / L_k (see :func:`run`)."""


class LossScaleNet(nn.Module):
    """Backbone Linear(1, 20) - LeakyReLU - Linear(20, 20) - LeakyReLU; per task a head
    Linear(20, 20) - LeakyReLU - Linear(20, 1)."""

    def __init__(self, hidden: int = 20, n_tasks: int = 2) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Linear(1, hidden), nn.LeakyReLU(), nn.Linear(hidden, hidden), nn.LeakyReLU()
        )
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, hidden), nn.LeakyReLU(), nn.Linear(hidden, 1))
            for _ in range(n_tasks)
        )

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The representation and each head's (N, 1) prediction."""
        z = self.backbone(x)
        return z, [head(z) for head in self.heads]


def make_data(samples: int = 256, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Inputs x ~ U(0, 1) of shape (samples, 1) and targets (samples, K), ``factor_k * x``,
    in float64."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(samples, 1, generator=generator, dtype=torch.float64)
    return x, x * torch.tensor(TARGET_FACTORS, dtype=torch.float64)


@dataclass(frozen=True)
class History:
    """Per step (one row each) of one run; K = 2 columns where per task.

    ``losses`` are the unscaled L1 losses, ``scaled`` the losses the method sees (x10 and
    x0.1 in the scaled setting), ``weighted`` the method's terms of its objective
    (d objective / d L_k times L_k as the method sees it: L_k / 2 for EW, 1 for UW-O).
    ``head_grad`` and ``backbone_grad`` are gradient norms (the backbone's is the gradient
    of the objective, also when frozen), ``head_update`` and ``backbone_update`` the norms
    of the parameter change of the step.
    """

    method: str
    optimizer: str
    scaled: bool
    train_backbone: bool
    losses: np.ndarray
    scaled_losses: np.ndarray
    weighted: np.ndarray
    head_grad: np.ndarray
    head_update: np.ndarray
    backbone_grad: np.ndarray
    backbone_update: np.ndarray

    @property
    def label(self) -> str:
        """E.g. ``EW + SGD``."""
        names = {"sgd": "SGD", "adam": "Adam", "per_task_adam": "per-task Adam"}
        method = "EW" if self.method == "unit_scal" else registry.spec(self.method).display_name
        return f"{method} + {names[self.optimizer]}"


def _norm(tensors: Sequence[Tensor]) -> float:
    return float(torch.sqrt(sum((t.detach().double() ** 2).sum() for t in tensors)))


def _optimizer(
    name: str,
    shared: list[Tensor],
    heads: list[Tensor],
    train_backbone: bool,
    lr: float,
    eps: float,
) -> torch.optim.Optimizer:
    trainable = (shared if train_backbone else []) + heads
    if name == "sgd":
        return torch.optim.SGD(trainable, lr=lr)
    if name == "adam":
        return torch.optim.Adam(trainable, lr=lr, eps=eps)
    if name == "per_task_adam":
        groups = [{"params": shared, "per_task": True}] if train_backbone else []
        return PerTaskAdam([*groups, {"params": heads}], n_tasks=2, lr=lr, eps=eps)
    raise ConfigError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def run(
    method: str,
    optimizer: str,
    *,
    scaled: bool,
    train_backbone: bool,
    steps: int = 100,
    lr: float = 3e-3,
    samples: int = 256,
    seed: int = 0,
    eps: float = 1e-16,
) -> History:
    """Trains the toy for ``steps`` full-batch steps and records every step.

    The network's initialization and the data depend only on ``seed``, so a scaled and an
    unscaled run start from the same weights. A frozen backbone (``train_backbone=False``)
    is left out of the optimizer; its gradient is still computed and recorded. The toy
    runs in float64, so that rounding does not hide the invariances. ``eps`` is Adam's
    (and per-task Adam's): torch's 1e-8 breaks the invariance of every parameter whose
    gradient is not far above 1e-8 (Elich et al. note a slight divergence), so the toy's
    default is 1e-16; UW-O runs with eps = 0 (its guard against a zero loss) for the same
    reason.
    """
    if steps < 1 or not lr > 0 or samples < 1:
        raise ConfigError("steps and samples must be >= 1 and lr > 0")
    x, y = make_data(samples, seed)
    torch.manual_seed(seed)
    model = LossScaleNet().double()
    shared = list(model.backbone.parameters())
    head_params = [list(h.parameters()) for h in model.heads]
    opt = _optimizer(
        optimizer, shared, [p for ps in head_params for p in ps], train_backbone, lr, eps
    )
    scales = torch.tensor(SCALES if scaled else (1.0, 1.0), dtype=torch.float64)
    smto_method = registry.create(
        method, 2, **METHOD_HYPERPARAMETERS.get(registry.spec(method).name, {})
    )
    per_task = optimizer == "per_task_adam" and train_backbone
    rows: dict[str, list] = {
        k: [] for k in ("losses", "scaled", "weighted", "hg", "hu", "bg", "bu")
    }
    for _ in range(steps):
        for p in model.parameters():
            p.grad = None
        opt.zero_grad(set_to_none=True)
        z, predictions = model(x)
        raw = torch.stack([(p[:, 0] - y[:, k]).abs().mean() for k, p in enumerate(predictions)])
        losses = raw * scales
        if per_task:
            result = smto_method.backward(losses, shared, z, per_task_grads=True)
        else:
            result = smto_method.backward(losses, shared, z)
        heads_before = [[p.detach().clone() for p in ps] for ps in head_params]
        shared_before = [p.detach().clone() for p in shared]
        backbone_grads = [
            p.task_grads.sum(0) if hasattr(p, "task_grads") else p.grad
            for p in shared
            if p.grad is not None or hasattr(p, "task_grads")
        ]
        rows["bg"].append(_norm(backbone_grads))
        rows["hg"].append([_norm([p.grad for p in ps]) for ps in head_params])
        opt.step()
        rows["hu"].append(
            [_norm([p - b for p, b in zip(ps, bs)]) for ps, bs in zip(head_params, heads_before)]
        )
        rows["bu"].append(_norm([p - b for p, b in zip(shared, shared_before)]))
        rows["losses"].append(raw.detach().tolist())
        rows["scaled"].append(losses.detach().tolist())
        rows["weighted"].append((result.weights * losses.detach()).tolist())
    return History(
        method=registry.spec(method).name,
        optimizer=optimizer,
        scaled=scaled,
        train_backbone=train_backbone,
        losses=np.array(rows["losses"]),
        scaled_losses=np.array(rows["scaled"]),
        weighted=np.array(rows["weighted"]),
        head_grad=np.array(rows["hg"]),
        head_update=np.array(rows["hu"]),
        backbone_grad=np.array(rows["bg"]),
        backbone_update=np.array(rows["bu"]),
    )


def experiment(
    train_backbone: bool, runs: Sequence[tuple[str, str]] = RUNS, **options: float
) -> list[tuple[History, History]]:
    """Each run of ``runs`` unscaled and scaled: ``[(unscaled, scaled), ...]``."""
    return [
        (
            run(m, o, scaled=False, train_backbone=train_backbone, **options),
            run(m, o, scaled=True, train_backbone=train_backbone, **options),
        )
        for m, o in runs
    ]


def _ratio(scaled: np.ndarray, unscaled: np.ndarray) -> np.ndarray:
    return scaled / np.where(unscaled == 0, np.nan, unscaled)


def format_table(pairs: Sequence[tuple[History, History]]) -> str:
    """One row per run and setting: final unscaled losses, the first step's gradient norms,
    and the ratio of the scaled to the unscaled update norms (first step; and the largest
    deviation from 1 over the run): 1 where the update is invariant to the loss scales."""
    header = [
        "run", "setting", "final L1", "final L2", "|g| head1", "|g| head2", "|g| backbone",
        "upd ratio h1", "h2", "backbone", "max |ratio-1|",
    ]  # fmt: skip
    lines = [header]
    for unscaled, scaled in pairs:
        ratios = np.column_stack(
            [
                _ratio(scaled.head_update, unscaled.head_update),
                _ratio(scaled.backbone_update, unscaled.backbone_update)[:, None],
            ]
        )
        if not unscaled.train_backbone:
            ratios = ratios[:, :2]
        deviation = float(np.nanmax(np.abs(ratios - 1)))
        for history in (unscaled, scaled):
            first = ratios[0]
            lines.append(
                [
                    history.label,
                    "scaled" if history.scaled else "unscaled",
                    f"{history.losses[-1, 0]:.4f}",
                    f"{history.losses[-1, 1]:.4f}",
                    f"{history.head_grad[0, 0]:.3g}",
                    f"{history.head_grad[0, 1]:.3g}",
                    f"{history.backbone_grad[0]:.3g}",
                    *(
                        [f"{first[0]:.3g}", f"{first[1]:.3g}"]
                        + ([f"{first[2]:.3g}"] if unscaled.train_backbone else ["frozen"])
                        if history.scaled
                        else ["", "", ""]
                    ),
                    f"{deviation:.2g}" if history.scaled else "",
                ]
            )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    text = [" | ".join(v.rjust(w) for v, w in zip(row, widths)) for row in lines]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(text)
